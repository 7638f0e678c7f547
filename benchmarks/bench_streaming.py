"""3 streaming: training from a bucket far larger than the local cache, against the all-cached speed.

    python -m benchmarks.bench_streaming            # 4,000 frames (about 8 minutes on 2 cores)
    python -m benchmarks.bench_streaming --quick    # 200 frames: a smoke run, not evidence

Everything below is measured in one run, on the same frames, with S3 = moto's server behind the
20 ms latency proxy, the tiny model of the issue (72x80, 16 channels, batch 32), 2 DataLoader
workers, and each figure from a Trainer's epochs 2 and 3 (epoch 1 starts the workers):

- **ceiling**: the same frames decoded into memory before training (no I/O, no workers), the
  issue's ceiling: the targets are ratios against it;
- **baseline**: every frame fits the cache (no `--max-cache-bytes`): warmed into decoded units on
  local disk before training, the one data path with no I/O to wait for;
- **packed 4x / 40x**: `pokevq pack`ed frames, the cache 4x and 40x smaller than the bucket in
  frames and than its shards in bytes (`--max-cache-bytes`): shards streamed through the cache;
- **unpacked 4x**: the same frames unpacked: concurrent per-frame fetches, decoded every epoch;
- **unpacked, decoded units fit**: unpacked, 4x more frames than `--max-cache-size` but `--max-cache-bytes`
  at the PNGs' bytes: epoch 1 keeps the frames as decoded units on local disk, later epochs read them.

Also: GET requests per epoch (counted at the proxy), the cache directory's size sampled every
50 ms during the streaming epochs against `--max-cache-bytes`, planning a 1,000,000-frame epoch
(time and traced memory per frame), and the data path's own decoding rate per core at 144x160.
Results go to benchmarks/STREAMING.md (STREAMING-quick.md with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, PREFIX, S3Stack, machine_info, make_frames, upload_frames

TINY = dict(image_size="72x80", hidden_channels=16, batch_size=32, num_workers=2, device="cpu", seed=0,
            val_fraction=0.0, learning_rate=1e-3)


_SAMPLER = r"""
import os, sys, time
root, out = sys.argv[1], sys.argv[2]
peak = 0
while not os.path.exists(out + ".stop"):
    seen, total = set(), 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if st.st_ino not in seen:  # a file renamed while the walk runs is counted once
                seen.add(st.st_ino)
                total += st.st_size
    peak = max(peak, total)
    time.sleep(0.05)
open(out, "w").write(str(peak))
"""


class DiskSampler:
    """The cache directory's size every 50 ms while an epoch runs, from another process (it takes no GIL here)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.out = directory.parent / f".{directory.name}.peak"
        self.peak = 0

    def __enter__(self) -> DiskSampler:
        import subprocess

        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.out, Path(str(self.out) + ".stop")):
            path.unlink(missing_ok=True)
        self.process = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(self.directory), str(self.out)])
        return self

    def __exit__(self, *exc: object) -> None:
        Path(str(self.out) + ".stop").write_text("")
        self.process.wait(timeout=30)
        self.peak = int(self.out.read_text() or 0)


def run_case(stack: S3Stack, name: str, work: Path, *, max_cache_size: int, max_cache_bytes: int | None,
             epochs: int, log: Any) -> dict[str, Any]:
    from pokevq.config import TrainConfig
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.data.reader import BucketReader
    from pokevq.data.source import FrameSource
    from pokevq.train.trainer import Trainer

    storage = stack.storage()
    manifest = index_frames(storage, PREFIX, val_fraction=0.0)
    cache_dir = work / f"cache-{name}"
    config = TrainConfig.from_dict({**TINY, "num_epochs": epochs, "experiment_name": f"bench-{name}",
                                    "max_cache_size": max_cache_size, "max_cache_bytes": max_cache_bytes,
                                    "local_cache_dir": str(cache_dir)})
    source = FrameSource(storage, FrameCache(cache_dir, max_items=max_cache_size, max_bytes=max_cache_bytes))
    path = BucketReader.decide(manifest, source, max_bytes=max_cache_bytes)
    if path.fits:  # as the flow's warm_cache step does
        from pokevq.data.warm import warm_units

        warm_units(path, manifest, source, config.model.image_hw, progress=False)
    trainer = Trainer(config, manifest, source, work / f"run-{name}", reader=path)
    rates, stalls, requests, disk = [], [], [], []
    try:
        for epoch in range(1, epochs + 1):
            stack.reset()
            with DiskSampler(cache_dir) as sampler:
                result = trainer.train_epoch(epoch)
            gets = stack.proxy.stats()["by_method"].get("GET", 0)
            log(f"  {name}: epoch {epoch} {result.frames_per_second:.0f} frames/s, "
                f"stall {100 * result.data_stall:.0f}%, "
                f"{gets} GETs, disk max {sampler.peak / 1e6:.2f} MB")
            if epoch >= 2:
                rates.append(result.frames_per_second)
                stalls.append(result.data_stall)
                requests.append(gets)
                disk.append(sampler.peak)
    finally:
        trainer.close()
        source.cache.close()
    return {"mode": path.describe(), "frames_per_second": statistics.median(rates), "stall": statistics.median(stalls),
            "gets_per_epoch": statistics.median(requests), "disk_max": max(disk), "frames": len(manifest),
            "max_cache_bytes": max_cache_bytes, "max_cache_size": max_cache_size}


class InMemoryFrames:
    """The ceiling: the same frames already decoded in memory as float tensors, no I/O, no workers.

    It offers what the Trainer asks of a loader (`set_epoch`, `tracker`, `len`, iteration), shuffled per epoch.
    """

    def __init__(self, images: Any, keys: list[str], batch_size: int, seed: int) -> None:
        self.images, self.keys, self.batch_size, self.seed = images, keys, batch_size, seed
        self.order: Any = None

    def set_epoch(self, epoch: int, position: Any = None) -> None:
        import torch

        self.order = torch.randperm(len(self.keys), generator=torch.Generator().manual_seed(self.seed + epoch))

    def tracker(self, epoch: int) -> Any:
        return _NoPosition()

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)

    def __iter__(self) -> Any:
        from pokevq.data.batch import Batch

        for start in range(0, len(self.keys), self.batch_size):
            picked = self.order[start:start + self.batch_size]
            yield Batch(images=self.images[picked], keys=[self.keys[int(i)] for i in picked])


class _NoPosition:
    """The ceiling's epochs are never resumed: nothing to record."""

    def advance(self, batch: Any) -> None:
        pass

    def position(self) -> dict[str, Any]:
        return {}


def run_ceiling(stack: S3Stack, root: Path, work: Path, *, epochs: int, log: Any) -> dict[str, Any]:
    """The issue's ceiling: the Trainer's epochs over the bucket's frames, decoded in memory before it starts."""
    import torch

    from pokevq.config import TrainConfig
    from pokevq.data.cache import FrameCache
    from pokevq.data.frames import decode_frame
    from pokevq.data.manifest import index_frames
    from pokevq.data.reader import BucketReader
    from pokevq.data.source import FrameSource
    from pokevq.train.trainer import Trainer

    config = TrainConfig.from_dict({**TINY, "num_epochs": epochs, "experiment_name": "bench-ceiling",
                                    "local_cache_dir": str(work / "cache-ceiling")})
    storage = stack.storage()  # the codebook's seed frames are read from the bucket, before the epochs
    manifest = index_frames(storage, PREFIX, val_fraction=0.0)
    keys = manifest["key"].tolist()
    images = torch.stack([decode_frame((root / key[len(PREFIX):]).read_bytes(), config.model.image_hw) for key in keys])

    class InMemory(BucketReader):
        def loader(self, rows: Any, *args: Any, **kwargs: Any) -> Any:
            return InMemoryFrames(images, keys, config.batch_size, config.seed)

        def describe(self) -> str:
            return "in memory"

    source = FrameSource(storage, FrameCache(work / "cache-ceiling", max_items=1))
    trainer = Trainer(config, manifest, source, work / "run-ceiling", reader=InMemory())
    rates = []
    try:
        for epoch in range(1, epochs + 1):
            result = trainer.train_epoch(epoch)
            log(f"  ceiling: epoch {epoch} {result.frames_per_second:.0f} frames/s")
            if epoch >= 2:
                rates.append(result.frames_per_second)
    finally:
        trainer.close()
        source.cache.close()
    return {"mode": "in memory", "frames_per_second": statistics.median(rates), "stall": 0.0, "gets_per_epoch": 0.0,
            "disk_max": 0, "frames": len(keys), "max_cache_bytes": None, "max_cache_size": None}


def _packed_ratio(files: list[Path]) -> float:
    """Packed frames' bytes against their PNGs' (`record.py`), to size shards and caches before packing."""
    from pokevq.data import record
    from pokevq.data.frames import decode_native

    pngs = [f.read_bytes() for f in files]
    return sum(len(record.encode(decode_native(data))) for data in pngs) / sum(map(len, pngs))


def planning_at_scale(frames: int = 1_000_000) -> dict[str, Any]:
    """A simulated manifest and shard index of `frames` frames: time and traced memory to plan an epoch."""
    import gc
    import tracemalloc

    import numpy as np
    import pandas as pd

    from pokevq.data.order import group_units, rank_frames, worker_streams
    from pokevq.data.shards import ShardIndex

    per_shard = 4000
    keys = [f"pokemon_frames/game{i % 7}/episode{i // 5000:05d}/frame_{i % 5000:05d}.png" for i in range(frames)]
    etags = [f"{i:032x}" for i in range(frames)]
    shard = np.arange(frames) // per_shard
    index = pd.DataFrame({"key": keys, "etag": etags, "size": 3000,
                          "shard": [f"pokemon_frames/_shards/p/shard-{s:05d}.tar" for s in shard],
                          "offset": (np.arange(frames) % per_shard) * 3584 + 512, "length": 3000})
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    located = ShardIndex("pokemon_frames", index).locate_all(keys, etags)
    units = group_units(located.shard, located.offset)
    unit_of = units.unit_of(frames)
    mine = rank_frames(units, seed=0, epoch=3, rank=0, world_size=1)
    streams = worker_streams(mine, 32, 2)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    kept = located.shard.nbytes + located.offset.nbytes + located.length.nbytes + units.order.nbytes + unit_of.nbytes
    assert sum(len(s) for s in streams) == frames
    return {"frames": frames, "seconds": round(seconds, 2), "peak_bytes_per_frame": round(peak / frames, 1),
            "kept_bytes_per_frame": round(kept / frames, 1)}


def decoding_rate(root: Path, log: Any) -> dict[str, Any]:
    """The streaming path's own rate (no model) at the default 144x160, from packed local shards."""
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.data.pack import pack
    from pokevq.data.reader import BucketReader
    from pokevq.data.source import FrameSource
    from pokevq.storage import LocalStorage

    storage = LocalStorage(root)
    pack(storage, "frames", shard_bytes=1024 * 1024)
    manifest = index_frames(storage, "frames", val_fraction=0.0)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-decode-") as directory:
        source = FrameSource(storage, FrameCache(directory, max_items=4))
        path = BucketReader.decide(manifest, source, max_bytes=None)
        for workers, on_device in ((0, True), (0, False), (2, False)):
            loader = path.loader(manifest, source, (144, 160), batch_size=64, seed=0, shuffle=True,
                                 num_workers=workers, pin_memory=False)
            # On a GPU host (pinned memory) the workers hand over palette indices; the device expands them.
            loader.dataset.options.expand_on_device = on_device
            rates = []
            for epoch in (1, 2, 3):
                loader.set_epoch(epoch)
                started, count = time.perf_counter(), 0
                for batch in loader:
                    count += len(batch.keys)
                if epoch > 1:
                    rates.append(count / (time.perf_counter() - started))
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
            name = f"workers_{workers}" + ("_indices" if on_device else "")
            out[name] = statistics.median(rates)
            log(f"  decoding: {name}: {out[name]:.0f} frames/s")
    out["per_core"] = out["workers_0_indices"]
    return out


def default_model_flops() -> float:
    """Training FLOPs per 144x160 frame of the default model (forward + backward), counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pokevq.config import TrainConfig
    from pokevq.model.vqvae import VQVAE, ModelConfig

    model = VQVAE(ModelConfig.for_run(TrainConfig(device="cpu", experiment_name="flops")))
    images = torch.rand(4, 3, 144, 160)
    with FlopCounterMode(display=False) as counter:
        model(images).loss.backward()
    return counter.get_total_flops() / 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default="unpacked_4x,unpacked_fit,packed_4x,packed_40x",
                        help="comma-separated cases besides the baseline (default: all)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    frames = 200 if args.quick else 4000
    epochs = 2 if args.quick else 3
    machine = machine_info()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-stream-") as tmp:
        work = Path(tmp)
        files = make_frames(work / "frames", frames)
        log(f"{len(files)} frames made")
        with S3Stack(latency_ms=20.0) as stack:
            stack.create_bucket()
            upload_frames(stack, work / "frames", files)
            total_bytes = sum(f.stat().st_size for f in files)
            packed_ratio = _packed_ratio(files[:200])
            cache = max(1, len(files) // 4)
            results["ceiling"] = run_ceiling(stack, work / "frames", work, epochs=epochs, log=log)
            results["baseline"] = run_case(stack, "baseline", work, max_cache_size=10 * len(files),
                                           max_cache_bytes=None, epochs=epochs, log=log)
            cases = set(args.cases.split(","))
            if "unpacked_4x" in cases:
                results["unpacked_4x"] = run_case(stack, "unpacked_4x", work, max_cache_size=cache,
                                                  max_cache_bytes=total_bytes // 4, epochs=epochs,
                                                  log=log)
            if "unpacked_fit" in cases:
                # More frames than --max-cache-size and PNG bytes at --max-cache-bytes: decoded units fit.
                results["unpacked_fit"] = run_case(stack, "unpacked_fit", work, max_cache_size=cache,
                                                   max_cache_bytes=total_bytes, epochs=epochs,
                                                   log=log)
            from pokevq.data.pack import pack

            for factor in (4,):
                if f"packed_{factor}x" not in cases:
                    continue
                # Shards sized to the cache (16 of them fit), as a user sizes --shard-size to the worker's disk;
                # the cache is a `factor`th of the shards' bytes (packed frames are smaller than the PNGs).
                shard_bytes = max(1024, int(total_bytes * packed_ratio) // factor // 16)
                packed = pack(stack.storage(), PREFIX, shard_bytes=shard_bytes, threads=16, full=True)
                results[f"pack_{factor}x"] = packed.to_dict()
                log(f"packed into {packed.shards} shards of ~{shard_bytes / 1e3:.0f} KB")
                results[f"packed_{factor}x"] = run_case(
                    stack, f"packed_{factor}x", work, max_cache_size=max(1, len(files) // factor),
                    max_cache_bytes=packed.bytes // factor, epochs=epochs, log=log)
        if "packed_40x" in cases and not args.quick:
            # 40x: the same 4,000 frames under 10 episode names each (40,000 objects, bulk-loaded into moto),
            # so the cache (1,000 frames, a 40th of the bytes) holds shards of the same size as in the 4x case.
            copies = 10
            with S3Stack(latency_ms=20.0, bulk=True) as big:
                big.create_bucket()
                items = [(f"{PREFIX}{f.parent.parent.name}/{f.parent.name}c{c}/{f.name}", f.read_bytes())
                         for c in range(copies) for f in files]
                big.server.bulk_put_bodies("pokevq-bench", items)
                log(f"{len(items)} frames bulk-loaded for the 40x case")
                from pokevq.data.pack import pack
                from pokevq.storage import S3Storage

                shard_bytes = max(1024, int(total_bytes * packed_ratio) // 4 // 16)  # the 4x case's shard size
                direct = S3Storage("pokevq-bench", "us-east-1", endpoint_url=big.server.endpoint_url)
                packed = pack(direct, PREFIX, shard_bytes=shard_bytes, threads=32, full=True)
                big_bytes = packed.bytes
                results["pack_40x"] = packed.to_dict()
                log(f"packed into {packed.shards} shards of ~{shard_bytes / 1e3:.0f} KB")
                results["packed_40x"] = run_case(
                    big, "packed_40x", work, max_cache_size=len(items) // 40, max_cache_bytes=big_bytes // 40,
                    epochs=2, log=log)
        results["decoding"] = decoding_rate(work, log)
    results["planning"] = planning_at_scale(100_000 if args.quick else 1_000_000)
    log(f"planning: {results['planning']}")
    results["model_flops_per_frame"] = default_model_flops()
    out = HERE / ("STREAMING-quick.md" if args.quick else "STREAMING.md")
    out.write_text(render(results, machine, frames, time.perf_counter() - started))
    (out.with_suffix(".json")).write_text(json.dumps({"machine": machine, "results": results}, indent=2, default=str))
    print(out.read_text())
    return 0


def render(r: dict[str, Any], machine: dict[str, Any], frames: int, seconds: float) -> str:
    base = r["baseline"]["frames_per_second"]
    ceiling = r["ceiling"]["frames_per_second"] if "ceiling" in r else base
    lines = [
        "# Streaming benchmark (benchmarks/bench_streaming.py)", "",
        f"{frames} synthetic frames in moto's S3 behind a 20 ms latency proxy; tiny model (72x80, 16 channels, "
        "batch 32), 2 DataLoader workers; each figure the median of epochs 2..N of one Trainer. "
        f"Machine: {machine['cpu']}, {machine['cores']} cores; run took {seconds / 60:.1f} min.", "",
        "The ceiling is the same frames decoded into memory before training (no I/O, no workers): the targets "
        "are against it. All-cached is every frame warmed into decoded units on local disk before training.", "",
        "| case | data path | frames/s | × ceiling | target | × all-cached | data stall | GETs/epoch | "
        "disk max / limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = {"packed_4x": 0.9, "packed_40x": 0.9, "unpacked_4x": 0.3, "unpacked_fit": 0.9}
    names = {"ceiling": "ceiling: decoded in memory",
             "baseline": "all cached (baseline)", "before": "before: cached path, bucket 4× the cache",
             "packed_4x": "packed, bucket 4× the cache", "packed_40x": "packed, bucket 40× the cache (40,000 frames)",
             "unpacked_4x": "unpacked, bucket 4× the cache",
             "unpacked_fit": "unpacked, 4× --max-cache-size, decoded units fit --max-cache-bytes (epochs 2+)"}
    for key in ("ceiling", "baseline", "before", "packed_4x", "packed_40x", "unpacked_4x", "unpacked_fit"):
        if key not in r:
            continue
        row = r[key]
        ratio = row["frames_per_second"] / ceiling
        target = targets.get(key)
        verdict = "" if target is None else (f"≥{target}× {'met' if ratio >= target else 'MISSED'}")
        limit = row["max_cache_bytes"]
        disk = f"{row['disk_max'] / 1e6:.2f} / {limit / 1e6:.2f} MB" if limit else f"{row['disk_max'] / 1e6:.2f} MB / –"
        pack = r.get(f"pack_{key.split('_')[-1]}") if key.startswith("packed") else None
        gets = f"{row['gets_per_epoch']:.0f}"
        if pack:
            allowed = pack["shards"] + 0.01 * pack["indexed"]
            gets += f" (≤ {allowed:.0f}: {'met' if row['gets_per_epoch'] <= allowed else 'MISSED'})"
        kind = row["mode"].split("; ")[-1]  # where the frames were: in memory, all on local disk, or streamed
        lines.append(f"| {names[key]} | {kind} | {row['frames_per_second']:.0f} | {ratio:.2f} | {verdict} | "
                     f"{row['frames_per_second'] / base:.2f} | {100 * row['stall']:.0f} % | {gets} | {disk} |")
    for factor in (4, 40):
        pack = r.get(f"pack_{factor}x")
        if pack:
            lines.append(f"\nPacked for the {factor}× case: {pack['indexed']} frames in {pack['shards']} shards "
                         f"(16 fit the cache). Requests target: ≤ shards + 1 % of frames per epoch.")
    plan = r["planning"]
    lines += ["", "## Planning at scale", "",
              f"{plan['frames']:,} simulated frames and shards: an epoch planned (frames located in the shard index, "
              f"units, shuffle, rank and worker split) in **{plan['seconds']} s** (target ≤ 10 s), peak traced "
              f"memory **{plan['peak_bytes_per_frame']} bytes per frame** (target ≤ 200), of which "
              f"{plan['kept_bytes_per_frame']} bytes per frame are kept for the epoch."]
    dec = r["decoding"]
    flops = r["model_flops_per_frame"]
    low, high = 0.1 * 989e12 / flops, 0.4 * 989e12 / flops  # bf16 dense peak at 10 % and 40 % utilisation
    per_core = dec["per_core"]
    lines += ["", "## Decoding throughput", "",
              "The streaming path alone (no model), packed local shards (frames packed decoded, `record.py`), "
              f"144x160 frames: **{per_core:.0f} frames/s on one core** (in-process) to what a GPU host's model "
              "consumes (palette indices and palettes; the device expands them), target ≥ 30,000; "
              f"{dec['workers_0']:.0f} frames/s on one core when the workers also expand to float RGB (a CPU "
              f"model's input), {dec['workers_2']:.0f} frames/s so with 2 worker processes on this 2-core machine.",
              f"The default model costs {flops / 1e9:.2f} GFLOP per frame (forward and backward, counted by "
              "torch's FlopCounterMode). An H100 (989 TFLOP/s bf16) at 10–40 % utilisation would train "
              f"{low:,.0f}–{high:,.0f} frames/s, which takes **{low / per_core:.1f}–{high / per_core:.1f} cores** "
              "of decoding at this rate. Projected, not measured: no GPU was lent."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
