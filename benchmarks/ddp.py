"""Per-step cost of training in several processes (DDP over gloo on CPU), measured in one run.

Three ways to train the same global batch on the same frames, each one CPU thread per process:

- **independent**: 2 processes, each its half of the batch, no communication (world size 1 each);
  the compute the 2-process run must do anyway;
- **DDP**: 2 processes of one run (pokevq's trainer, `torch.distributed`, gloo), each its half,
  gradients all-reduced, codebook statistics gathered, metrics merged;
- **one process**: the whole batch in one process with 2 threads (what `--nproc-per-node 1` does).

The DDP overhead per step is DDP's step time over the independent one, less 1. Epoch 1 warms up
(decodes the frames, initialises the codebook); epochs 2 and 3 are timed.

    python -m benchmarks.ddp [--quick] [--out benchmarks/DDP.md]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

TIMED_EPOCHS = (2, 3)


def _config(options: dict[str, Any]) -> Any:
    from pokevq.config import TrainConfig

    return TrainConfig.from_dict({"device": "cpu", "num_workers": 0, "val_fraction": 0.0, "seed": 0,
                                  "experiment_name": "bench-ddp", "learning_rate": 1e-3, **options})


def _train(rank: int, world: int, port: int, frames: str, work: str, options: dict[str, Any], threads: int,
           out: str) -> None:
    """One process: train epoch 1 (warm-up) and the timed epochs; write ms per step of the global batch."""
    import torch
    import torch.distributed as dist

    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage
    from pokevq.train.trainer import Trainer

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    storage = LocalStorage(frames)
    manifest = index_frames(storage, "", val_fraction=0.0, seed=0)
    config = _config(options)
    source = FrameSource(storage, FrameCache(Path(work) / "cache", max_items=len(manifest) + 1))
    trainer = Trainer(config, manifest, source, Path(work) / f"run{rank}-{world}")
    trainer.train_epoch(1)
    step_ms = []
    for epoch in TIMED_EPOCHS:
        result = trainer.train_epoch(epoch)  # frames/s of the whole run (every rank's frames, the slowest's time)
        step_ms.append(1000 * trainer.rank_batch * world / result.frames_per_second)
    trainer.close()
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps({"step_ms": step_ms}))


def _spawn(processes: int, world: int, frames: Path, work: Path, options: dict[str, Any], threads: int) -> float:
    """Median ms per step of rank 0 (the slowest-rank time for DDP: metrics are merged over the ranks)."""
    import torch.multiprocessing as mp

    from pokevq.storage.local_server import free_port

    out = work / f"result-{processes}-{world}.json"
    port = free_port()
    started = time.perf_counter()
    if processes == 1:
        _train(0, 1, port, str(frames), str(work), options, threads, str(out))
    else:
        mp.spawn(_train, args=(world, port, str(frames), str(work), options, threads, str(out)), nprocs=processes,
                 join=True)
    seconds = time.perf_counter() - started
    step_ms = sorted(json.loads(out.read_text())["step_ms"])
    print(f"  {processes} process(es), world size {world}: {step_ms} ms per step ({seconds:.0f} s in all)")
    return step_ms[len(step_ms) // 2]


def measure(quick: bool) -> dict[str, Any]:
    from pokevq.synth.generate import generate_dataset

    if quick:
        model = dict(image_size="72x80", hidden_channels=16, codebook_size=32, embedding_dim=8)
        frames, batch = 64, 8
    else:
        model = {}  # the default model: 144x160, 128 channels, 512 codes of 64 dims
        frames, batch = 192, 16
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-ddp-") as directory:
        work = Path(directory)
        generate_dataset(work / "frames", games=2, episodes=2, frames=frames // 4, seed=0)
        half = {**model, "batch_size": batch // 2}
        whole = {**model, "batch_size": batch}
        print(f"DDP overhead: {frames} frames, global batch {batch}, {'tiny' if quick else 'default'} model")
        independent = _spawn(2, 1, work / "frames", work, half, threads=1)
        ddp = _spawn(2, 2, work / "frames", work, whole, threads=1)
        one = _spawn(1, 1, work / "frames", work, whole, threads=2)
    return {"quick": quick, "frames": frames, "global_batch": batch, "model": model or "default",
            "independent_ms": independent, "ddp_ms": ddp, "one_process_ms": one,
            "ddp_overhead": ddp / independent - 1, "ddp_vs_one_process": one / ddp, "cores": os.cpu_count()}


def markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        "# DDP per-step overhead (CPU, gloo)",
        "",
        f"`python -m benchmarks.ddp{' --quick' if result['quick'] else ''}` on {result['cores']} cores: "
        f"{result['frames']} synthetic gameplay frames, global batch {result['global_batch']}, model "
        f"{result['model']}; median ms per training step of the global batch over epochs 2 and 3.",
        "",
        "| how | ms per step | |",
        "|---|---:|---|",
        f"| 2 independent processes, half the batch each, 1 thread each | {result['independent_ms']:.1f} | the "
        "compute alone (baseline) |",
        f"| 2 processes of one run (DDP, gloo), half the batch each, 1 thread each | {result['ddp_ms']:.1f} | "
        f"**{100 * result['ddp_overhead']:+.1f} %** over the baseline |",
        f"| 1 process, the whole batch, 2 threads | {result['one_process_ms']:.1f} | "
        f"{result['ddp_vs_one_process']:.2f}x the DDP run's speed |",
        "",
        "The overhead is what DDP adds per step: the gradients' all-reduce, the gathered codebook statistics and",
        "rank 0's codebook broadcast, a small agreement per step (a batch every rank can train; the time budget too",
        "when one is set), and the ranks waiting for each other at those points. On a GPU machine",
        "`scripts/gpu_check.sh` measures scaling over NCCL.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A tiny model and few frames (CI size).")
    parser.add_argument("--out", default=None, help="Markdown results (default: benchmarks/DDP[-quick].md).")
    args = parser.parse_args()
    result = measure(args.quick)
    out = Path(args.out or Path(__file__).with_name("DDP-quick.md" if args.quick else "DDP.md"))
    out.write_text(markdown(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
