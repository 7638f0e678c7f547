"""benchmarks/quality.py runs end to end at its smoke size: the table, the target check, the results file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quality_benchmark_quick_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.quality", "--quick", "--variants", "default,tile-512,fsq",
         "--results", str(tmp_path / "QUALITY.md"), "--json", str(tmp_path / "quality.json"),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "quality.json").read_text())
    assert [r["variant"] for r in data["results"]] == ["default", "tile-512", "fsq"]
    for row in data["results"]:
        val = row["val"]
        assert row["epochs"] == 2 and row["steps"] > 0
        for name in ("pixel_accuracy", "ssim", "codebook_usage", "token_stability", "exact_frames"):
            assert 0 <= val[name] <= 1, (row["variant"], name)
        assert 1 <= val["perplexity"] <= 64 and val["data_tiles"] > 0

    # Every row scored on the same validation frames: k-means at 64 codes first, the bound last.
    floors = {row["variant"]: row for row in data["baselines"]}
    assert list(floors)[0] == "k-means 64" and list(floors)[-1] == "exact dictionary"
    assert floors["exact dictionary"]["val"]["psnr"] > floors["k-means 64"]["val"]["psnr"]
    assert floors["k-means 64"]["bits_per_token"] == 6 and floors["k-means 512"]["bits_per_token"] == 9
    exact = floors["exact dictionary"]
    assert exact["bits_per_token"] == pytest.approx(math.log2(exact["codebook_size"]))
    for row in [*data["results"], *floors.values()]:
        val = row["val"]
        assert row["tokens_per_frame"] == 90 and row["bits_per_frame"] == pytest.approx(90 * row["bits_per_token"])
        assert 0 <= val["unseen_pixel_accuracy"] <= 1 and val["encode_frames_per_second"] > 0 and row["seconds"] > 0
        assert 0 < val["codes_used"] <= min(row["codebook_size"], val["data_tiles"]), row["variant"]
    for row in data["results"]:  # the benchmark's own pass over the model gives the trainer's figures
        for metric in ("psnr", "pixel_accuracy", "dialog_accuracy"):
            assert row["val"][metric] == pytest.approx(row["trainer_val"][metric], rel=1e-6), (row["variant"], metric)
    cover = data["coverage"]
    assert 0 < cover["val_positions_unseen"] < cover["val_positions"] == 40 * 90

    # The table is printed last, one line per variant then per dictionary, after the default's check.
    lines = result.stdout.strip().splitlines()
    rows = len(floors) + 3
    header = lines[-rows - 1]
    assert header.startswith("tokenizer") and "bits/token" in header and "unseen acc" in header
    assert [line.split()[0] for line in lines[-rows:-len(floors)]] == ["default", "tile-512", "fsq"]
    assert lines[-len(floors)].startswith("k-means 64") and lines[-1].startswith("exact dictionary")
    assert any("default: PSNR ≥ exact dictionary + 1 dB" in line for line in lines)
    assert any("default: encode speed ≥ 0.5× tile-512's" in line and "n/a" not in line for line in lines)
    assert [verdict for _, _, verdict in data["targets"]][:2] == ["met", "met"]  # 90 tokens, 6 bits
    assert all(verdict in ("met", "n/a") or verdict.startswith("MISSED by ") for _, _, verdict in data["targets"])

    text = (tmp_path / "QUALITY.md").read_text()
    for needle in ("## Machine", "## Settings", "size: **quick**", "gameplay frames", "## Rate and distortion",
                   "| default | 90 | 6 | 540 |", "| exact dictionary |", "## The default against the issue's targets",
                   "| bits per token ≤ 16 | 6 (goal 16) | met |", "| PSNR ≥ exact dictionary + 1 dB |",
                   "never occurs in training", '"architecture": "tile", "codebook_size": 512, "quantizer": "fsq"'):
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
    # the dialog column reads "–"; --baselines-only scores the dictionaries alone.
    from benchmarks import quality

    fixture = ROOT / "tests" / "fixtures" / "ucity"
    common = ["--data-dir", str(fixture), "--quick", "--workdir", str(tmp_path / "work")]
    assert quality.main([*common, "--variants", "default", "--results", str(tmp_path / "QUALITY.md"),
                         "--json", str(tmp_path / "trained.json")]) == 0
    run = json.loads((tmp_path / "trained.json").read_text())
    trained = run["results"][0]
    assert "dialog_accuracy" not in trained["val"] and 0 < trained["val"]["pixel_accuracy"] < 1
    report = (tmp_path / "QUALITY.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| default |")).split(" | ")
    assert row[6] == "–"  # the dialog accuracy column

    assert quality.main([*common, "--baselines-only", "--results", str(tmp_path / "DICT.md"),
                         "--json", str(tmp_path / "alone.json")]) == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["results"] == []
    with_model = {row["variant"]: row["val"] for row in run["baselines"]}
    assert [row["variant"] for row in alone["baselines"]] == list(with_model) == ["k-means 64", "k-means 512",
                                                                                  "exact dictionary"]
    for row in alone["baselines"]:  # the same dictionaries, the same frames, the same figures
        for metric in ("psnr", "pixel_accuracy", "exact_frames", "data_tiles", "unseen_pixel_accuracy", "codes_used"):
            assert row["val"][metric] == pytest.approx(with_model[row["variant"]][metric]), (row["variant"], metric)
    cover = alone["coverage"]
    assert cover == run["coverage"]
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
