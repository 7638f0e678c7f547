"""What a GPU machine does with pokevq, in one table (`scripts/gpu_check.sh` runs this on CUDA).

1. the default model's training frames/s, fp32 and bf16 autocast, eager and `torch.compile`;
2. the data stall of pokevq's streaming loader on a packed local bucket, training on the GPU;
3. DDP scaling efficiency over every visible GPU (per-GPU batch fixed; NCCL);
4. peak GPU memory of the bf16 step.

`--cpu-dry-run` runs every part with a tiny model on the CPU (gloo for NCCL, 2 processes), so CI
checks that the script works; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_BATCH = 64  # per GPU


def _model_config(dry: bool) -> Any:
    from pokevq.model.vqvae import ModelConfig

    if dry:
        return ModelConfig(image_size=(72, 80), hidden_channels=8, codebook_size=16, embedding_dim=4)
    return ModelConfig()  # the default model: 144x160, 128 channels, 512 codes of 64 dims


def _frames_per_second(device: str, bf16: bool, compiled: bool, dry: bool, steps: int, batch: int) -> tuple[float,
                                                                                                             float]:
    """Training step frames/s of the model alone (random frames already on the device), and peak memory in GB."""
    from pokevq.model.vqvae import VQVAE

    torch.manual_seed(0)
    config = _model_config(dry)
    model = VQVAE(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_model = torch.compile(model) if compiled else model
    h, w = config.image_size
    images = torch.rand(batch, 3, h, w, device=device)

    def step() -> None:
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            out = step_model(images)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    for _ in range(3 if not compiled else 5):  # warm-up (and compilation)
        step()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")
    return steps * batch / seconds, peak


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _streaming_stall(device: str, dry: bool, work: Path) -> dict[str, float]:
    """One epoch of pokevq's trainer on the streaming path over a packed local bucket."""
    from pokevq.config import TrainConfig
    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.data.pack import pack
    from pokevq.data.reader import BucketReader
    from pokevq.storage import LocalStorage
    from pokevq.synth.generate import generate_dataset
    from pokevq.train.trainer import Trainer

    frames = 64 if dry else 4096
    generate_dataset(work / "bucket" / "frames", games=2, episodes=4, frames=frames // 8, seed=0)
    storage = LocalStorage(str(work / "bucket"))
    pack(storage, "frames", shard_bytes=256 * 1024 if dry else 32 * 1024**2, threads=8)
    manifest = index_frames(storage, "frames", val_fraction=0.0, seed=0)
    model = dict(image_size="72x80", hidden_channels=8, codebook_size=16, embedding_dim=4) if dry else {}
    config = TrainConfig(device=device.split(":")[0], batch_size=8 if dry else DEFAULT_BATCH, num_epochs=1,
                         num_workers=2 if dry else 8, experiment_name="gpu-check", **model)
    source = FrameSource(storage, FrameCache(work / "cache", max_items=16))
    path = BucketReader.decide(manifest, source, max_bytes=2 * 1024**3)
    trainer = Trainer(config, manifest, source, work / "run", reader=path)
    try:
        result = trainer.train_epoch(1)
    finally:
        trainer.close()
    return {"frames": len(manifest), "frames_per_second": result.frames_per_second, "stall": result.data_stall}


def _ddp_rank(rank: int, world: int, port: int, dry: bool, steps: int, batch: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pokevq.model.vqvae import VQVAE

    cuda = not dry
    if cuda:
        torch.cuda.set_device(rank)
    device = f"cuda:{rank}" if cuda else "cpu"
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)
    config = _model_config(dry)
    model = VQVAE(config).to(device)
    ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None, forward_sync_buffers=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    h, w = config.image_size
    images = torch.rand(batch, 3, h, w, device=device)
    for number in range(steps + 3):
        if number == 3:
            _sync(device)
            dist.barrier()
            started = time.perf_counter()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
            out_ = ddp(images)
        optimizer.zero_grad(set_to_none=True)
        out_.loss.backward()
        optimizer.step()
    _sync(device)
    dist.barrier()
    seconds = time.perf_counter() - started
    if rank == 0:
        Path(out).write_text(json.dumps({"frames_per_second": steps * batch * world / seconds}))
    dist.destroy_process_group()


def _ddp(world: int, dry: bool, steps: int, batch: int, work: Path) -> float:
    import torch.multiprocessing as mp

    from pokevq.storage.local_server import free_port

    out = work / f"ddp-{world}.json"
    mp.spawn(_ddp_rank, args=(world, free_port(), dry, steps, batch, str(out)), nprocs=world, join=True)
    return float(json.loads(out.read_text())["frames_per_second"])


def check(dry: bool) -> list[tuple[str, str]]:
    device = "cpu" if dry else "cuda"
    steps, batch = (3, 8) if dry else (30, DEFAULT_BATCH)
    rows: list[tuple[str, str]] = []
    gpu = "CPU dry run (figures say nothing about a GPU)" if dry else torch.cuda.get_device_name(0)
    rows.append(("device", f"{gpu}; torch {torch.__version__}"))
    fp32, _ = _frames_per_second(device, False, False, dry, steps, batch)
    bf16, peak = _frames_per_second(device, True, False, dry, steps, batch)
    rows.append(("train frames/s, fp32 eager", f"{fp32:.0f}"))
    rows.append(("train frames/s, bf16 eager", f"{bf16:.0f} ({bf16 / fp32:.2f}x fp32)"))
    if not dry:
        for bf, label in ((False, "fp32"), (True, "bf16")):
            try:
                rate, _ = _frames_per_second(device, bf, True, dry, steps, batch)
                rows.append((f"train frames/s, {label} torch.compile", f"{rate:.0f} ({rate / fp32:.2f}x fp32 eager)"))
            except Exception as exc:  # noqa: BLE001 - a compiler failure is a finding, not the end of the check
                rows.append((f"train frames/s, {label} torch.compile", f"failed: {str(exc).splitlines()[0][:80]}"))
    rows.append(("peak GPU memory, bf16 step", "n/a on CPU" if dry else f"{peak:.2f} GB at batch {batch}"))
    with tempfile.TemporaryDirectory(prefix="pokevq-gpu-check-") as directory:
        work = Path(directory)
        stall = _streaming_stall(device, dry, work)
        rows.append(("streaming loader, packed local bucket",
                     f"{stall['frames_per_second']:.0f} frames/s, data stall {100 * stall['stall']:.0f}% "
                     f"({stall['frames']} frames)"))
        gpus = 2 if dry else torch.cuda.device_count()
        if gpus > 1:
            one = _ddp(1, dry, steps, batch, work)
            many = _ddp(gpus, dry, steps, batch, work)
            rows.append((f"DDP scaling, {gpus} {'processes' if dry else 'GPUs'}",
                         f"{many:.0f} frames/s vs {one:.0f} on 1: efficiency {100 * many / (gpus * one):.0f}%"))
        else:
            rows.append(("DDP scaling", "1 GPU visible: nothing to scale"))
    return rows


def table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| measure | result |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="Every part on the CPU with a tiny model.")
    args = parser.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); use --cpu-dry-run")
    os.environ.setdefault("OMP_NUM_THREADS", "1" if args.cpu_dry_run else os.environ.get("OMP_NUM_THREADS", "8"))
    print(table(check(args.cpu_dry_run)))


if __name__ == "__main__":
    main()
