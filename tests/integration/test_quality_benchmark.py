"""benchmarks/quality.py runs end to end at its smoke size: the table, the target check, the results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quality_benchmark_quick_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--variants", "vq,default,fsq",
         "--results", str(tmp_path / "QUALITY.md"), "--json", str(tmp_path / "quality.json"),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "quality.json").read_text())
    assert [r["variant"] for r in data["results"]] == ["vq", "default", "fsq"]
    for row in data["results"]:
        val = row["val"]
        assert row["epochs"] == 2 and row["steps"] > 0
        for name in ("pixel_accuracy", "ssim", "codebook_usage", "token_stability", "exact_frames"):
            assert 0 <= val[name] <= 1, (row["variant"], name)
        assert 1 <= val["perplexity"] <= 64 and val["data_tiles"] > 0

    # The table is printed last, one line per variant, after the default's check against the reach.
    lines = result.stdout.strip().splitlines()
    assert lines[-4].startswith("variant") and "pixel acc" in lines[-4] and "stability" in lines[-4]
    assert [line.split()[0] for line in lines[-3:]] == ["vq", "default", "fsq"]
    assert any("default: PSNR ≥ 35 dB" in line for line in lines)

    text = (tmp_path / "QUALITY.md").read_text()
    for needle in ("## Machine", "## Settings", "size: **quick**", "## Results", "| default |",
                   "## The default against the issue's reach", "| token stability ≥ 97 % |", "distinct tiles"):
        assert needle in text, needle


def test_unknown_variant_is_refused_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--variants", "default,nope"],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )
    assert result.returncode == 2
    assert "unknown variant(s) nope; choose from vq, ema" in result.stderr
    assert "Traceback" not in result.stderr
