"""1c listing and indexing many keys: pokevq's `index_frames` against one paginated list_objects_v2 loop.

The keys are tiny objects created in-process by `moto_bulk.py` (the S3 API would take minutes
for 100,000 puts); the listing itself goes over HTTP, through the latency proxy, to moto's server
(whose ListObjectsV2 is served from a sorted index, as S3 scales, instead of moto's O(bucket) scan).

Memory: peak RSS of indexing N keys and of indexing N/10 keys, each in a fresh subprocess;
the growth per extra frame is (peak_N - peak_N/10) / (0.9 N), the fixed costs cancelling out.

    python -m benchmarks.bench_listing --rss ENDPOINT PREFIX   # the subprocess: prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BUCKET, Row, S3Stack, module_command, ratio_row, run_json

SECTION = "1c listing"


def layout(prefix: str, frames: int, per_episode: int = 500, episodes_per_game: int = 20) -> list[str]:
    keys = []
    episodes = max(1, frames // per_episode)
    for e in range(episodes):
        game, episode = divmod(e, episodes_per_game)
        keys.extend(f"{prefix}game{game + 1}/episode{episode + 1}/frame_{n:04d}.png" for n in range(1, per_episode + 1))
    return keys


def sequential_listing(stack: S3Stack, prefix: str) -> tuple[float, int, int]:
    """(seconds, keys, requests) of one paginated list_objects_v2 loop with a stock boto3 client."""
    client = stack.client()
    client.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=1)  # connection warm
    stack.reset()
    started = time.perf_counter()
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        count += len(page.get("Contents", []))
    return time.perf_counter() - started, count, stack.requests()


def pokevq_index(stack: S3Stack, prefix: str, threads: int) -> tuple[float, int, int]:
    from pokevq.data.manifest import index_frames

    storage = stack.storage()
    storage.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=1)
    stack.reset()
    started = time.perf_counter()
    manifest = index_frames(storage, prefix, val_fraction=0.1, seed=0, threads=threads)
    return time.perf_counter() - started, len(manifest), stack.requests()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_main(endpoint: str, prefix: str) -> None:
    """Subprocess: RSS before indexing and the peak while indexing, in KiB."""
    import pokevq.data.manifest  # noqa: F401 - imports are fixed costs: load them before measuring
    from pokevq.data.manifest import index_frames
    from pokevq.storage import S3Storage

    storage = S3Storage(BUCKET, "us-east-1", endpoint_url=endpoint)
    storage.list_pages  # noqa: B018
    next(iter(storage.list_pages(prefix)))  # clients built, connection open
    import pyarrow  # noqa: F401
    # The peak must be this process's own while indexing: reset the high-water mark (Linux >= 4.0).
    # (ru_maxrss would not do: Linux carries it over from the parent across fork and exec.)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    before = _status_kib("VmRSS")
    manifest = index_frames(storage, prefix)
    peak = _status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": peak, "frames": len(manifest), "peak_reset": reset}))


def run(*, quick: bool, log: Any) -> tuple[list[Row], dict[str, Any]]:
    big = 20_000 if quick else 100_000
    small = big // 5 if quick else big // 10  # each with at least as many episodes as listing threads
    with S3Stack(bulk=True) as stack:
        stack.create_bucket()
        log(f"  creating {big + small} keys (in-process, tiny bodies)")
        started = time.perf_counter()
        stack.server.bulk_put(BUCKET, layout("big/", big) + layout("small/", small))
        seed_seconds = time.perf_counter() - started

        log(f"  baseline: one paginated list_objects_v2 loop over {big} keys")
        base_s, base_n, base_req = sequential_listing(stack, "big/")
        log("  pokevq index_frames (concurrent)")
        from pokevq.data.manifest import LIST_THREADS

        ours_s, ours_n, ours_req = pokevq_index(stack, "big/", LIST_THREADS)
        log("  pokevq index_frames, 1 thread")
        one_s, one_n, _ = pokevq_index(stack, "big/", 1)
        assert base_n == ours_n == one_n == big, (base_n, ours_n, one_n)

        log(f"  peak RSS of indexing {big} and {small} keys (subprocesses)")
        mem_big = run_json(module_command("bench_listing", "--rss", stack.url, "big/"))
        mem_small = run_json(module_command("bench_listing", "--rss", stack.url, "small/"))

    rows = [
        ratio_row(SECTION, f"pokevq index_frames ({LIST_THREADS} threads): {big} keys", ours_s, "s",
                  "one paginated list_objects_v2 loop", base_s, target=3, higher_is_better=False,
                  note=f"{ours_req} requests vs {base_req}; lists, filters, sorts, splits"),
        ratio_row(SECTION, f"pokevq index_frames (1 thread): {big} keys", one_s, "s",
                  "one paginated list_objects_v2 loop", base_s, higher_is_better=False,
                  note="the cheaper page parsing alone, without concurrency"),
    ]
    info: dict[str, Any] = {"keys": big, "small_keys": small, "seed_seconds": round(seed_seconds, 1),
                            "threads": LIST_THREADS, "layout": "500 frames per episode, 20 episodes per game",
                            "memory_big": mem_big, "memory_small": mem_small}
    if "error" not in mem_big and "error" not in mem_small:
        grow_big = (mem_big["peak_kib"] - mem_big["before_kib"]) * 1024
        grow_small = (mem_small["peak_kib"] - mem_small["before_kib"]) * 1024
        per_frame = (grow_big - grow_small) / (big - small)
        info["bytes_per_frame"] = round(per_frame, 1)
        rows.append(Row(SECTION, "peak RSS growth per extra frame", per_frame, "bytes/frame",
                        f"indexing {small} keys", None, None, "≤300 B/frame", per_frame <= 300,
                        f"peak−before: {grow_big / 2**20:.1f} MiB for {big} keys, "
                        f"{grow_small / 2**20:.1f} MiB for {small}"))
    else:
        rows.append(Row(SECTION, "peak RSS growth per extra frame", float("nan"), "bytes/frame", "", None, None,
                        "≤300 B/frame", None, str(mem_big.get("error") or mem_small.get("error"))))
    return rows, info


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rss", nargs=2, metavar=("ENDPOINT", "PREFIX"), required=True)
    args = parser.parse_args()
    rss_main(*args.rss)
