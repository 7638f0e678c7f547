"""Originals against reconstructions for the README: validation frames, the default model, the exact dictionary.

    python -m benchmarks.pictures --checkpoint RUN/checkpoints/checkpoint_epoch_3.pt --frames DIR --out PNG

Rows, top to bottom: the original frames, the model's reconstructions, the exact dictionary's (every distinct
8x8 patch of the training frames one code). Validation frames are the trainer's own held-out episodes, taken
at even steps through them (not picked for the model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from pokevq.data.frames import decode_frame
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage
    from pokevq.tokenizer.model import Tokenizer
    from pokevq.train.baselines import fit_baselines
    from pokevq.train.preview import grid_png

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames", required=True, help="the folder the model was trained on (pokevq's layout)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()

    tokenizer = Tokenizer.from_checkpoint(args.checkpoint)
    storage = LocalStorage(args.frames)
    manifest = index_frames(storage, "", val_fraction=0.1, seed=0)

    def load(split: str) -> torch.Tensor:
        keys = manifest.loc[manifest["split"] == split, "key"]
        return torch.stack([decode_frame(storage.get_bytes(k), tokenizer.image_size) for k in keys])

    train, val = load("train"), load("val")
    exact = next(d for d in fit_baselines(train.split(64), 65536, 8) if d.name == "exact dictionary")
    ours = tokenizer.decode_images(tokenizer.encode_images(val)).float() / 255
    theirs = exact.decode(exact.encode(val))
    shown = torch.linspace(0, len(val) - 1, args.count + 2)[1:-1].round().long()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(grid_png(val[shown], ours[shown], theirs[shown]))
    print(f"Wrote {args.out}: validation frames {shown.tolist()} (originals, the model, the exact dictionary)")


if __name__ == "__main__":
    main()
