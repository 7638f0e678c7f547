"""Use a trained tokenizer: encode frames to codes, decode codes to frames, tokenize a bucket, export."""
