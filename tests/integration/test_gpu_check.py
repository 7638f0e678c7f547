"""The GPU check and the DDP benchmark run end to end at CI size on the CPU (their figures are not targets)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_prints_its_table():
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", done.stdout, flags=re.M))
    assert float(rows["train frames/s, fp32 eager"]) > 0
    assert re.fullmatch(r"\d+ \([\d.]+x fp32\)", rows["train frames/s, bf16 eager"])
    assert re.match(r"\d+ frames/s, data stall \d+%", rows["streaming loader, packed local bucket"])
    assert re.search(r"efficiency \d+%", rows["DDP scaling, 2 processes"])


def test_gpu_check_refuses_without_a_gpu():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "no CUDA GPU here" in done.stderr


def test_ddp_benchmark_measures_the_overhead(tmp_path):
    out = tmp_path / "DDP.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.ddp", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["independent_ms"] > 0 and result["ddp_ms"] > 0 and result["one_process_ms"] > 0
    assert result["ddp_overhead"] == result["ddp_ms"] / result["independent_ms"] - 1
    assert "over the baseline" in out.read_text()
