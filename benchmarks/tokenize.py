"""Tokenizing a packed bucket against the model's forward-only speed, measured in the same run.

- **forward only**: the tokenizer's encoder and codebook lookup on batches already in memory
  (what the model can do at best);
- **tokenize**: `pokevq.tokenizer.bucket.tokenize_bucket` on a packed local bucket: shards read
  through the streaming data path by DataLoader workers, frames decoded, encoded, one Parquet
  file written per episode.

Target (issue 14): tokenize ≥ 0.8x forward only, on this machine's cores.

    python -m benchmarks.tokenize [--quick] [--frames N] [--out benchmarks/TOKENIZE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.8


def _tokenizer(quick: bool, work: Path) -> Any:
    """An untrained model's checkpoint (the speed does not depend on the weights)."""
    import torch

    from pokevq.model.vqvae import VQVAE, ModelConfig
    from pokevq.tokenizer.model import Tokenizer
    from pokevq.train.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(image_size=(72, 80), hidden_channels=16, codebook_size=32, embedding_dim=8) if quick \
        else ModelConfig()
    model = VQVAE(config)
    state = build_checkpoint(model, torch.optim.AdamW(model.parameters()), epoch=1, global_step=1,
                             config={"experiment_name": "bench-tokenize"}, model_config=config.to_dict(), metrics={},
                             history=[], best=None)
    path = work / "checkpoint.pt"
    save_checkpoint(state, path)
    return Tokenizer.from_checkpoint(path, device="cpu", batch_size=64)


def measure(quick: bool, frames: int, workers: int | None) -> dict[str, Any]:
    import pandas as pd
    import torch

    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.data.pack import pack
    from pokevq.storage import LocalStorage
    from pokevq.synth.generate import generate_dataset
    from pokevq.tokenizer.bucket import auto_workers, tokenize_bucket
    from pokevq.tokenizer.tokens import TokenSet

    with tempfile.TemporaryDirectory(prefix="pokevq-bench-tokenize-") as directory:
        work = Path(directory)
        generate_dataset(work / "bucket" / "frames", games=2, episodes=4, frames=frames // 8, seed=0)
        storage = LocalStorage(str(work / "bucket"))
        pack(storage, "frames", shard_bytes=1024 * 1024, threads=8)
        manifest = index_frames(storage, "frames", val_fraction=0.0, seed=0)
        tokenizer = _tokenizer(quick, work)
        workers = auto_workers(tokenizer.device) if workers is None else workers

        # Forward only: the same number of frames, already decoded, in batches of the same size.
        h, w = tokenizer.image_size
        batch = torch.rand(tokenizer.batch_size, 3, h, w)
        tokenizer.encode_images(batch)  # warm-up
        started = time.perf_counter()
        done = 0
        while done < len(manifest):
            tokenizer.encode_images(batch)
            done += len(batch)
        forward = done / (time.perf_counter() - started)

        def tokenize(count: int, out: str) -> Any:
            source = FrameSource(storage, FrameCache(work / f"cache-{out}", max_items=16))
            return tokenize_bucket(tokenizer, manifest, source, LocalStorage(str(work / out)),
                                   TokenSet("bench-tokenize", tokenizer.lineage.checkpoint_sha256),
                                   batch_size=tokenizer.batch_size, num_workers=count,
                                   max_cache_bytes=2 * 1024**3, progress=False)

        result = tokenize(workers, "out")
        other = None if quick or workers == 2 else tokenize(2, "out-2").frames_per_second
        files = list((work / "out").rglob("episode*.parquet"))
        written = int(sum(pd.read_parquet(f, columns=["frame"]).shape[0] for f in files))
    return {"quick": quick, "frames": len(manifest), "episodes": len(files), "frames_written": written,
            "workers": workers, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "model": "tiny" if quick else "default", "forward_fps": forward,
            "tokenize_fps": result.frames_per_second, "ratio": result.frames_per_second / forward,
            "sample_psnr": result.sample_psnr, "tokenize_fps_2_workers": other}


def markdown(r: dict[str, Any]) -> str:
    met = "met" if r["ratio"] >= TARGET else f"missed by {TARGET - r['ratio']:.2f}"
    return "\n".join([
        "# Tokenizing a packed bucket against the model's forward-only speed",
        "",
        f"`python -m benchmarks.tokenize{' --quick' if r['quick'] else ''}` on {r['cores']} cores "
        f"({r['torch_threads']} torch threads), {r['model']} model, {r['frames']} synthetic gameplay frames in "
        f"{r['episodes']} episodes, packed in 1 MB shards on local disk, {r['workers']} DataLoader workers, batch 64.",
        "",
        "| | frames/s |",
        "|---|---:|",
        f"| forward only (encoder + codebook lookup, frames already in memory) | {r['forward_fps']:.1f} |",
        f"| `tokenize_bucket` (shards read, frames decoded, encoded, Parquet written) | {r['tokenize_fps']:.1f} |",
        f"| ratio (target >= {TARGET}) | **{r['ratio']:.2f}** ({met}) |",
        *([f"| `tokenize_bucket` with 2 worker processes instead | {r['tokenize_fps_2_workers']:.1f} "
           f"({r['tokenize_fps_2_workers'] / r['forward_fps']:.2f}x): on the CPU the workers take the model's cores |"]
          if r.get("tokenize_fps_2_workers") else []),
        "",
        f"Every frame was written once: {r['frames_written']} rows in {r['episodes']} episode files.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A tiny model and 256 frames (CI size).")
    parser.add_argument("--frames", type=int, default=None, help="Frames in the bucket (default: 2048; quick 256).")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers reading shards (default: tokenize's own, 0 on the CPU).")
    parser.add_argument("--out", default=None, help="Markdown results (default: benchmarks/TOKENIZE[-quick].md).")
    args = parser.parse_args()
    result = measure(args.quick, args.frames or (256 if args.quick else 2048), args.workers)
    out = Path(args.out or Path(__file__).with_name("TOKENIZE-quick.md" if args.quick else "TOKENIZE.md"))
    out.write_text(markdown(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
