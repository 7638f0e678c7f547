"""1a cold fetch and 2 shards: frames/s from an empty cache, through the latency proxy.

pokevq's `warm_cache` (a thread pool over the frame cache) against
  (a) a naive `get_object` loop, one frame after another,
  (b) a DataLoader over a Dataset doing one boto3 `get_object` per item (same worker count),
  (c) s3torchconnector's `S3MapDataset` through a DataLoader (same worker count, its own venv),
and per-frame `warm_cache` against `warm_cache` reading shards written by `pokevq pack`,
with the number of requests each made, counted by the proxy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BUCKET, HERE, PREFIX, Row, S3Stack, ratio_row, run_json

SECTION = "1a cold fetch"
SHARD_SECTION = "2 shards"


class Boto3PerItem:
    """The usual PyTorch pattern: a map-style Dataset doing one get_object per item (a client per worker)."""

    def __init__(self, endpoint: str, keys: list[str]) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self._client: Any = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> bytes:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        return self._client.get_object(Bucket=BUCKET, Key=self.keys[index])["Body"].read()

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": self.keys, "_client": None}


def as_list(items: list) -> list:
    return items


def loader_rate(loader: Any) -> float:
    """Items per second after the first batch (worker start-up is not fetching)."""
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    count = 0
    for batch in iterator:
        count += len(batch)
    return count / (time.perf_counter() - started)


def naive_rate(stack: S3Stack, keys: list[str]) -> float:
    client = stack.client()
    client.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()  # connection and client warm
    started = time.perf_counter()
    for key in keys:
        client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return len(keys) / (time.perf_counter() - started)


def dataloader_rate(stack: S3Stack, keys: list[str], workers: int, batch: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(Boto3PerItem(stack.url, keys), batch_size=batch, num_workers=workers,
                        multiprocessing_context="spawn", collate_fn=as_list, prefetch_factor=4)
    return loader_rate(loader)


def warm_rate(stack: S3Stack, manifest: Any, *, shards: bool = False) -> tuple[float, int, dict]:
    """(frames/s, requests, stats) of pokevq's warm_cache step into an empty local store (decoded units, or whole
    shards with `shards` when the bucket is packed)."""
    from pokevq.data import BucketReader, FrameSource, warm_units
    from pokevq.data.cache import FrameCache

    with tempfile.TemporaryDirectory(prefix="pokevq-bench-cache-") as directory:
        cache = FrameCache(directory, max_items=len(manifest) + 16)
        storage = stack.storage()
        storage.head(manifest["key"].iloc[0])  # client built, connection open: as after indexing in a run
        source = FrameSource(storage, cache)
        path = BucketReader.decide(manifest, source, max_bytes=None)
        if not shards:  # every frame from its own object, as in an unpacked bucket
            path = BucketReader.decide(manifest, FrameSource(storage, cache), max_bytes=None)
            path.index, path.packed = None, 0
        stack.reset()
        started = time.perf_counter()
        stats = warm_units(path, manifest, source, (144, 160), progress=False)
        seconds = time.perf_counter() - started
        requests = stack.requests()
        cache.close()
    return len(manifest) / seconds, requests, stats


# ------------------------------------------------------------------ s3torchconnector


S3TC_VENV = HERE / ".venv"


def s3tc_python(install: bool) -> tuple[Path | None, str]:
    """benchmarks/.venv with s3torchconnector, seeing the main venv's torch (so no CUDA build is pulled)."""
    python = S3TC_VENV / "bin" / "python"
    try:
        if not python.exists():
            if not install:
                return None, "benchmarks/.venv not created (run the full suite once)"
            subprocess.run([sys.executable, "-m", "venv", str(S3TC_VENV)], check=True, capture_output=True, timeout=120)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        import sysconfig

        main_site = sysconfig.get_paths()["purelib"]
        (Path(site) / "pokevq-main-venv.pth").write_text(main_site + "\n")
        probe = subprocess.run([str(python), "-c", "import s3torchconnector, torch; print(torch.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            if not install:
                return None, "s3torchconnector not installed in benchmarks/.venv (run the full suite once)"
            pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "s3torchconnector"],
                                 capture_output=True, text=True, timeout=600)
            if pip.returncode != 0:
                return None, "pip install s3torchconnector failed: " + " | ".join(pip.stderr.strip().splitlines()[-3:])
        return python, ""
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"benchmark venv unavailable: {exc}"


def s3tc_rate(stack: S3Stack, keys: list[str], workers: int, batch: int, install: bool) -> tuple[float | None, str]:
    python, why = s3tc_python(install)
    if python is None:
        return None, why
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(keys, handle)
    result = run_json([str(python), str(HERE / "s3tc_worker.py"), "--endpoint", stack.url, "--bucket", BUCKET,
                       "--keys", handle.name, "--workers", str(workers), "--batch", str(batch)], timeout=300)
    Path(handle.name).unlink(missing_ok=True)
    if "error" in result:
        return None, "s3torchconnector failed: " + result["error"][-400:]
    return float(result["frames_per_second"]), f"s3torchconnector {result.get('version', '?')}"


# ------------------------------------------------------------------ the section


def run(stack: S3Stack, manifest: Any, *, quick: bool, workers: int, batch: int, image_size: tuple[int, int],
        log: Any) -> tuple[list[Row], dict[str, Any]]:
    keys = manifest["key"].tolist()
    n_naive = 60 if quick else 200
    n_loader = 160 if quick else 640
    info: dict[str, Any] = {"frames": len(keys), "naive_frames": n_naive, "loader_frames": n_loader,
                            "workers": workers, "batch": batch}
    rows: list[Row] = []

    rounds = 1 if quick else 3
    naive_runs: list[float] = []
    warm_runs: list[float] = []
    warm_requests = 0
    for round_ in range(rounds):  # baseline and pokevq alternate; each figure is the median of its rounds
        start = (round_ * n_naive) % max(1, len(keys) - n_naive)
        log(f"  naive get_object loop over {n_naive} frames (round {round_ + 1}/{rounds})")
        naive_runs.append(naive_rate(stack, keys[start:start + n_naive]))
        log(f"  pokevq warm_cache (decoded units) over {len(keys)} frames (round {round_ + 1}/{rounds})")
        rate, warm_requests, _ = warm_rate(stack, manifest)
        warm_runs.append(rate)
    naive = statistics.median(naive_runs)
    warm = statistics.median(warm_runs)
    info["naive_rounds"] = [round(r, 1) for r in naive_runs]
    info["warm_cache_rounds"] = [round(r, 1) for r in warm_runs]
    log(f"  DataLoader(boto3 per item, {workers} workers) over {n_loader} frames")
    loader = dataloader_rate(stack, keys[:n_loader], workers, batch)
    if quick:
        s3tc, s3tc_note = None, "not run with --quick"
    else:
        log(f"  s3torchconnector S3MapDataset ({workers} workers) over {n_loader} frames")
        s3tc, s3tc_note = s3tc_rate(stack, keys[:n_loader], workers, batch, install=True)
    info["s3torchconnector"] = s3tc_note

    name = "pokevq warm_cache (fetch and decode into local units)"
    rows.append(ratio_row(SECTION, name, warm, "frames/s", "naive get_object loop", naive, target=10))
    rows.append(ratio_row(SECTION, name, warm, "frames/s", f"DataLoader, boto3 per item ({workers} workers)", loader,
                          note="no target set"))
    if s3tc is not None:
        rows.append(ratio_row(SECTION, name, warm, "frames/s", f"s3torchconnector S3MapDataset ({workers} workers)",
                              s3tc, target=1))
    else:
        rows.append(Row(SECTION, name, warm, "frames/s", "s3torchconnector S3MapDataset", None, None, "≥1×", None,
                        s3tc_note))
    info["per_frame_requests"] = warm_requests
    info["per_frame_rate"] = warm
    return rows, info


def run_shards(stack: S3Stack, manifest: Any, per_frame_rate: float, per_frame_requests: int, *, quick: bool,
               log: Any) -> tuple[list[Row], dict[str, Any]]:
    from pokevq.data.pack import pack

    shard_bytes = 256 * 1024 if quick else 1024 * 1024
    log(f"  pokevq pack ({shard_bytes // 1024} KiB shards)")
    started = time.perf_counter()
    result = pack(stack.storage(), PREFIX, shard_bytes=shard_bytes, threads=32, manifest=manifest)
    pack_seconds = time.perf_counter() - started
    runs: list[float] = []
    frame_runs: list[float] = []
    rounds = 1 if quick else 3
    for round_ in range(rounds):  # alternate with per-frame runs: a load spike hits both
        log(f"  pokevq warm_cache reading shards, then per frame (round {round_ + 1}/{rounds})")
        rate, requests, stats = warm_rate(stack, manifest, shards=True)
        runs.append(rate)
        if not quick:
            frame_runs.append(warm_rate(stack, manifest)[0])
    rate = statistics.median(runs)
    if frame_runs:
        per_frame_rate = statistics.median(frame_runs)
    info = {"shard_bytes": shard_bytes, "shards": result.shards, "packed_frames": result.frames,
            "packed_bytes": result.bytes, "pack_seconds": round(pack_seconds, 2), "shard_requests": requests,
            "per_frame_requests": per_frame_requests, "frames_from_shards": stats.get("from_shards"),
            "shard_rounds": [round(r, 1) for r in runs], "per_frame_rounds": [round(r, 1) for r in frame_runs]}
    rows = [
        ratio_row(SHARD_SECTION, "warm_cache from shards: requests", requests, "requests",
                  "warm_cache per frame: requests", per_frame_requests, target=100, higher_is_better=False,
                  note=f"{result.shards} shards of ≤{shard_bytes // 1024} KiB; includes the index lookup"),
        ratio_row(SHARD_SECTION, "warm_cache from shards", rate, "frames/s", "warm_cache per frame", per_frame_rate,
                  target=5),
    ]
    return rows, info
