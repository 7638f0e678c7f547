"""The model: `vqvae` (encoder, quantizer, decoder) built from `ModelConfig`, `quantizers`, and `options`
(the named choices, free of torch so the configuration can check them)."""
