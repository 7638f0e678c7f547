"""Packed frames (`pokevq/data/record.py`) against the PNGs they come from, on real and synthetic frames.

    python -m benchmarks.packed_frames --data ucity=/tmp/ucity_a --data gameplay=/tmp/gameplay/frames

For each folder of frames: the packed bytes against the PNGs' bytes (target ≤ 1.0×), how many frames
take 2, 4 or 8 bits a pixel or raw RGB, and on one core: packing (PNG decode + palette + zstd) and
reading a packed frame back to palette indices, against decoding its PNG, in the same run.
Results go to benchmarks/PACKED.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import HERE, machine_info


def measure(folder: Path, limit: int) -> dict[str, Any]:
    from pokevq.data import record
    from pokevq.data.frames import decode_frame_uint8, decode_native

    files = sorted(folder.rglob("*.png"))[:limit]
    pngs = [f.read_bytes() for f in files]
    started = time.perf_counter()
    packed = [record.encode(decode_native(data)) for data in pngs]
    pack_seconds = time.perf_counter() - started
    kinds = Counter("rgb" if p[5] == record.KIND_RGB else f"{p[6]}-bit" for p in packed)
    best = {}
    for name, step in (("png", lambda: [decode_frame_uint8(d, (144, 160)) for d in pngs]),
                       ("packed", lambda: [record.decode(p) for p in packed])):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        best[name] = len(pngs) / min(times)
    return {"frames": len(pngs), "png_bytes": sum(map(len, pngs)), "packed_bytes": sum(map(len, packed)),
            "kinds": dict(kinds), "pack_fps": len(pngs) / pack_seconds, "png_fps": best["png"],
            "packed_fps": best["packed"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="NAME=FOLDER of PNG frames (repeatable)")
    parser.add_argument("--limit", type=int, default=2000, help="frames per folder (default 2000)")
    args = parser.parse_args(argv)
    machine = machine_info()
    lines = ["# Packed frames against their PNGs (benchmarks/packed_frames.py)", "",
             f"One core of {machine['cpu']} ({machine['cores']} cores); each decode rate the best of 3 passes.", "",
             "| frames | count | packed / PNG bytes (≤ 1.0×) | bits a pixel | pack, frames/s | PNG decode, frames/s "
             "| packed read, frames/s | × PNG |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for item in args.data:
        name, _, folder = item.partition("=")
        r = measure(Path(folder), args.limit)
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r["kinds"].items()))
        lines.append(f"| {name} | {r['frames']} | {r['packed_bytes'] / r['png_bytes']:.2f}× "
                     f"({r['packed_bytes'] / 1e6:.2f} / {r['png_bytes'] / 1e6:.2f} MB) | {kinds} | "
                     f"{r['pack_fps']:.0f} | {r['png_fps']:.0f} | {r['packed_fps']:.0f} | "
                     f"{r['packed_fps'] / r['png_fps']:.1f} |")
        print(lines[-1], flush=True)
    (HERE / "PACKED.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
