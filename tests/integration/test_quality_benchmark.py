"""benchmarks/quality.py runs end to end at its smoke size: the table, the target check, the results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

    # The tile dictionaries scored by the same trainer on the same frames: k-means at 64 codes first, the bound last.
    floors = {row["variant"]: row["val"] for row in data["baselines"]}
    assert list(floors)[0] == "k-means 64" and list(floors)[-1] == "exact dictionary"
    assert floors["exact dictionary"]["psnr"] > floors["k-means 64"]["psnr"]

    # The table is printed last, one line per variant then per dictionary, after the default's check.
    lines = result.stdout.strip().splitlines()
    rows = len(floors) + 3
    header = lines[-rows - 1]
    assert header.startswith("variant") and "pixel acc" in header and "stability" in header
    assert [line.split()[0] for line in lines[-rows:-len(floors)]] == ["vq", "default", "fsq"]
    assert lines[-len(floors)].startswith("k-means 64") and lines[-1].startswith("exact dictionary")
    assert any("default: PSNR ≥ 40 dB" in line for line in lines)
    assert any("default: PSNR ≥ 10 dB above k-means 512" in line for line in lines)

    text = (tmp_path / "QUALITY.md").read_text()
    for needle in ("## Machine", "## Settings", "size: **quick**", "gameplay frames", "## Results", "| default |",
                   "| exact dictionary |", "## The default against the issue's reach", "| token stability ≥ 99 % |",
                   "| PSNR above the exact training-tile dictionary |", "distinct tiles"):
        assert needle in text, needle


def test_unknown_variant_is_refused_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--variants", "default,nope"],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )
    assert result.returncode == 2
    assert "unknown variant(s) nope; choose from vq, ema" in result.stderr
    assert "Traceback" not in result.stderr


def test_real_colour_frames_without_annotations_and_the_dictionaries_alone(tmp_path, capsys):
    # µCity frames (tests/fixtures/ucity) carry no palettes or dialog boxes: the palettes come off the frames,
    # the dialog figure is "–" and its target cannot be judged; --baselines-only scores the trainer's dictionaries.
    from benchmarks import quality

    fixture = ROOT / "tests" / "fixtures" / "ucity"
    common = ["--data-dir", str(fixture), "--quick", "--workdir", str(tmp_path / "work")]
    assert quality.main([*common, "--variants", "default", "--results", str(tmp_path / "QUALITY.md"),
                         "--json", str(tmp_path / "trained.json")]) == 0
    trained = json.loads((tmp_path / "trained.json").read_text())["results"][0]
    assert "dialog_accuracy" not in trained["val"] and 0 < trained["val"]["pixel_accuracy"] < 1
    report = (tmp_path / "QUALITY.md").read_text()
    assert "| dialog and menu accuracy ≥ 99.9 % | – (no boxes annotated) | n/a |" in report

    assert quality.main([*common, "--baselines-only", "--results", str(tmp_path / "DICT.md"),
                         "--json", str(tmp_path / "alone.json")]) == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert list(alone["baselines"]) == list(trained["baselines"]) == ["k-means 64", "k-means 512", "exact dictionary"]
    for name, figures in alone["baselines"].items():  # the same dictionaries, the same frames, the same figures
        for metric in ("psnr", "pixel_accuracy", "exact_frames", "data_tiles"):
            assert figures[metric] == pytest.approx(trained["baselines"][name][metric]), (name, metric)
    cover = alone["coverage"]
    assert 0 < cover["val_positions_unseen"] < cover["val_positions"] and cover["val_tiles_unseen"] < cover["val_tiles"]
    assert cover["val_tiles"] == trained["val"]["data_tiles"]
    out = capsys.readouterr().out
    assert "tile positions hold a tile that never occurs in training" in out and "Written to" in out


def test_ucity_without_its_rom_is_one_line(tmp_path, monkeypatch, capsys):
    from benchmarks import quality, ucity_frames

    monkeypatch.setenv(ucity_frames.ROM_ENV, str(tmp_path / "nowhere.gbc"))
    assert quality.main(["--data", "ucity", "--baselines-only", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: µCity ROM not found at") and err.count("\n") == 0
