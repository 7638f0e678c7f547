"""pokevq's benchmark suite: one command, every figure a ratio to a baseline measured in the same run.

    python -m benchmarks.run            # full size (under 10 minutes on 2 cores); writes benchmarks/RESULTS.md
    python -m benchmarks.run --quick    # CI smoke size (under a minute); writes benchmarks/RESULTS-quick.md

S3 is moto's server (a subprocess) behind benchmarks/latency_proxy.py, which holds every request
`--latency-ms` (default 20 ms, like S3's first byte) and counts requests. Frames are synthetic
Game Boy frames from `pokevq.synth.generate_dataset`. Sections (see each module's docstring):

  1a cold fetch        bench_fetch.py    warm_cache vs naive loop, DataLoader+boto3, s3torchconnector
  1b warm epoch        bench_epoch.py    pokevq's data path (decoded units) vs DataLoader+Pillow
  1c listing           bench_listing.py  index_frames vs one paginated listing; memory per frame
  1d training step     bench_train.py    Trainer step vs plain fp32 eager PyTorch
  1e uploads, orchestration  bench_train.py  epochs with/without uploads; Prefect task overhead
  2  shards            bench_fetch.py    warm_cache from `pokevq pack` shards vs per frame, requests

The quick size only checks that everything runs and the figures are sane; its ratios are not
the targets' evidence (tiny data, startup-dominated).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, PREFIX, Row, S3Stack, machine_info, make_frames, upload_frames

SECTIONS = ("fetch", "shards", "epoch", "listing", "train", "uploads", "orchestration")


def _log_factory(started: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    return log


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def _met(row: Row) -> str:
    if row.met is None:
        return "—"
    return "met" if row.met else "MISSED"


def ratio_table(rows: list[Row]) -> list[str]:
    lines = ["| Section | Measured | Baseline (same run) | Ratio | Target | |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{_fmt(r.ratio)}×"
        measured = f"{r.name}: {_fmt(r.value)} {r.unit}"
        base = f"{r.baseline}: {_fmt(r.baseline_value)} {r.unit}" if r.baseline_value is not None else r.baseline
        lines.append(f"| {r.section} | {measured} | {base} | **{ratio}** | {r.target} | {_met(r)} |")
    return lines


def console_table(rows: list[Row]) -> str:
    out = [f"{'section':<22} {'measured':<58} {'ratio':>9}  {'target':<14} result"]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{_fmt(r.ratio)}x"
        name = r.name if len(r.name) <= 56 else r.name[:53] + "..."
        out.append(f"{r.section:<22} {name:<58} {ratio:>9}  {r.target:<14} {_met(r)}")
    return "\n".join(out)


def write_results(path: Path, rows: list[Row], details: dict[str, Any], machine: dict[str, Any],
                  settings: dict[str, Any], seconds: float, errors: dict[str, str]) -> None:
    mode = "quick (CI smoke size: sanity only, not evidence for the targets)" if settings["quick"] else "full"
    lines = [
        "# pokevq benchmark results",
        "",
        f"Written by `python -m benchmarks.run{' --quick' if settings['quick'] else ''}` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s. Mode: **{mode}**.",
        "",
        "Every figure is a ratio against a baseline measured in the same run on the same data: the machine",
        "is shared, so absolute rates are noisy and only shown for context. Ratio > 1 means pokevq is better",
        "(for times: the baseline's time over ours).",
        "",
        "## Machine",
        "",
        *[f"- **{k}**: {v}" for k, v in machine.items()],
        "",
        "## Settings",
        "",
        *[f"- **{k}**: {v}" for k, v in settings.items()],
        "",
        "## Ratios",
        "",
        *ratio_table(rows),
        "",
    ]
    if errors:
        lines += ["## Errors", ""] + [f"- **{k}**: `{v}`" for k, v in errors.items()] + [""]
    lines += ["## Details", "", "Raw numbers of each section (JSON):", ""]
    for section, info in details.items():
        lines += [f"### {section}", "", "```json", json.dumps(info, indent=1, default=str), "```", ""]
    notes = NOTES_QUICK if settings["quick"] else NOTES
    lines += ["## Notes", "", notes.strip(), ""]
    path.write_text("\n".join(lines))


NOTES = """
- **S3 model.** moto's server (one Python process) behind `latency_proxy.py` (another process), which
  holds each request 20 ms before forwarding it and keeps client connections alive. moto costs about
  2.2 ms of CPU per GET on this machine (the proxy 0.45 ms) and shares the 2 cores with the client, so
  rows that need many requests in flight are capped by moto's CPU, not by latency (at ~350 frames/s
  moto uses ~75% of a core and the client ~70%). The one-at-a-time baselines are latency-bound
  (20 ms + ~6 ms per request). On S3, whose CPU is not on the training node, the concurrent rows
  would gain more and the baselines would not: the cold-fetch ratio here is a floor.
- **Cold fetch (1a).** `warm_cache` is a pool of 64 threads (the sweep shows 16 to 96 equal within
  noise: CPU-bound). Baselines and pokevq alternate over 3 rounds; each figure is the median.
  s3torchconnector runs in `benchmarks/.venv` (created by the suite; the main venv's torch is made
  visible with a .pth file, so pip never pulls a CUDA build) against the proxy with
  `S3ClientConfig(force_path_style=True)`; it makes one ranged GET per object.
- **Warm epoch (1b).** pokevq's loader decodes PNGs in its worker processes on the first epoch, writing
  each frame into the decoded-frame store (a memory-mapped uint8 array next to the byte cache); once
  the store holds the split, epochs are read from it in the training process on a prefetch thread
  (one memory-mapped read per batch instead of PNG decoding and a float tensor crossing processes).
  Same configuration for both loaders: 2 workers, batch 16, shuffled, spawn, persistent workers.
- **Listing (1c).** 100,000 objects are created in-process by `moto_bulk.py` (the S3 API would take
  over five minutes for them) and its ListObjectsV2 answers from a sorted index (moto's own scans and
  sorts the whole bucket for every page: 0.8 s per page at 100k keys, which would measure moto). Its
  pages are checked against moto's own answers in tests/test_benchmarks_smoke.py. The listing goes
  over HTTP through the proxy like every other request. Memory is measured in fresh subprocesses with
  the kernel's peak-RSS mark reset just before indexing; both runs list with the same concurrency.
- **Uploads (1e).** The upload thread's own CPU is reported in the row's note; the rest of the
  slowdown is moto and the proxy receiving and copying checkpoints on the same two cores.
- **Noise.** The machine is shared with other engineers' test suites. Baselines and pokevq alternate
  (3 rounds, medians) so a load spike hits both, but runs made while other suites were busy (load
  average 4-5 on 2 cores) gave lower ratios for the CPU-bound rows: cold fetch 7.2-9.4× (vs 10.8×
  here), shards 2.9-5.6× frames/s (6.0×), uploads up to 1.76× (1.02×); requests (300×), listing
  (3.1-3.4×), memory (268-286 B/frame) and the warm epoch (3.2-13×) held. The load average at the
  start and the end of this run is in the header.
- **GPU.** No GPU here: the training-step row is CPU fp32 for both (about 1×). A GPU run adds bf16
  autocast and pinned-memory rows; the data path's stall fraction is logged per epoch
  (`epoch/data_stall_fraction` in TensorBoard, `data_wait_seconds` in each epoch's result).
- **Orchestration.** Per-task overhead on the ephemeral API (a flow of 20 tiny task runs against 20
  direct calls); `benchmarks/orchestration.py` measures the deployment on a real server and worker
  (not run here: it brings up the whole stack).
"""

NOTES_QUICK = """
Quick mode uses tiny data (startup-dominated) and skips s3torchconnector and the orchestration
row; run without `--quick` for the figures that count.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pokevq benchmark suite")
    parser.add_argument("--quick", action="store_true", help="CI smoke size (under a minute), sanity only")
    parser.add_argument("--results", default=None, help="Markdown output (default: benchmarks/RESULTS.md, "
                                                         "or RESULTS-quick.md with --quick)")
    parser.add_argument("--json", default=None, help="Also write the rows and details as JSON here")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"Comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="First-byte latency of the proxy (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for every loader (default 2, "
                                                                "pokevq's num_workers default)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    quick = args.quick
    # A SIGTERM must still stop the S3 server and proxy subprocesses (context managers run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = Path(args.results) if args.results else HERE / ("RESULTS-quick.md" if quick else "RESULTS.md")
    started = time.perf_counter()
    log = _log_factory(started)
    import torch

    torch.manual_seed(0)
    machine = machine_info()
    frames_n = 120 if quick else 2400
    image_size = (144, 160)
    batch = 16
    settings: dict[str, Any] = {
        "quick": quick,
        "frames (cold fetch, warm epoch, shards)": frames_n,
        "frame": "160x144 RGB PNG (synthetic Game Boy frames), ~2.3 KB each",
        "image_size": f"{image_size[0]}x{image_size[1]}",
        "batch_size": batch,
        "dataloader workers": args.workers,
        "proxy first-byte latency": f"{args.latency_ms:g} ms per request",
        "sections": ",".join(s for s in SECTIONS if s in only),
    }
    rows: list[Row] = []
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def section(name: str, fn: Callable[[], tuple[list[Row], dict[str, Any]]]) -> dict[str, Any] | None:
        if name not in only:
            return None
        log(f"section {name}")
        try:
            new_rows, info = fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            return None
        rows.extend(new_rows)
        details[name] = info
        return info

    from benchmarks import bench_epoch, bench_fetch, bench_listing, bench_train
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage

    with tempfile.TemporaryDirectory(prefix="pokevq-bench-") as tmp:
        root = Path(tmp) / "frames"
        log(f"making {frames_n} synthetic frames")
        files = make_frames(root, frames_n, games=2, episodes=2 if quick else 4)
        local_manifest = index_frames(LocalStorage(root), "", val_fraction=0.0)
        epoch_seconds = None
        if only & {"fetch", "shards", "epoch", "uploads"}:
            with S3Stack(args.latency_ms) as stack:
                stack.create_bucket()
                log("uploading the frames to moto (directly, not timed)")
                upload_frames(stack, root, files)
                manifest = index_frames(stack.storage(), PREFIX, val_fraction=0.0)
                fetch_info = section("fetch", lambda: bench_fetch.run(
                    stack, manifest, quick=quick, workers=args.workers, batch=batch, image_size=image_size, log=log))
                if "shards" in only:
                    if fetch_info is None:
                        rate, requests, _ = bench_fetch.warm_rate(stack, manifest, 64)
                        fetch_info = {"per_frame_rate": rate, "per_frame_requests": requests}
                    section("shards", lambda: bench_fetch.run_shards(
                        stack, manifest, fetch_info["per_frame_rate"], fetch_info["per_frame_requests"],
                        quick=quick, log=log))
                section("epoch", lambda: bench_epoch.run(
                    stack, manifest, files, workers=args.workers, batch=batch, image_size=image_size, log=log,
                    quick=quick))
                uploads = section("uploads", lambda: bench_train.run_uploads(
                    stack, root, local_manifest, quick=quick, log=log))
                if uploads is not None:
                    epoch_seconds = uploads["epoch_seconds"]
        section("listing", lambda: bench_listing.run(quick=quick, log=log))
        section("train", lambda: bench_train.run_train(root, local_manifest, quick=quick, log=log))
        if "orchestration" in only and not quick:
            section("orchestration", lambda: bench_train.run_orchestration(epoch_seconds or 1.0, log=log))

    seconds = time.perf_counter() - started
    settings["wall time"] = f"{seconds:.0f} s"
    try:
        import os

        settings["load average at the end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    write_results(results, rows, details, machine, settings, seconds, errors)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [r.to_dict() for r in rows], "details": details,
                                               "errors": errors, "machine": machine, "settings": settings,
                                               "seconds": seconds}, indent=1, default=str))
    log(f"wrote {results}")
    print()
    print(console_table(rows))
    if errors:
        print("\nErrors: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
