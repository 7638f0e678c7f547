"""The run report's tokenizer-quality table: what a person reads the morning after a nightly run."""

from __future__ import annotations

from pokevq.run.report import render_report

VAL = {
    "loss": 0.001, "psnr": 36.5, "ssim": 0.991, "pixel_accuracy": 0.99912, "exact_frames": 0.25,
    "dialog_accuracy": 0.9987, "token_stability": 1.0, "codebook_usage": 0.5, "dead_codes": 256,
    "perplexity": 14.1, "data_tiles": 254, "data_tile_perplexity": 14.12, "mse": 0.0002, "frames": 400,
}


def summary(val: dict) -> dict:
    return {
        "experiment": "nightly-20261202", "storage": "s3://bucket", "data": {}, "cache": {}, "timings": {},
        "epochs": [{"epoch": 1, "train": {"loss": 0.002, "psnr": 30.0}, "val": val, "seconds": 10,
                    "frames_per_second": 100.0}],
        "best": {"epoch": 1, "loss": 0.001}, "config": {"codebook_size": 512, "downsample": 8},
    }


def test_quality_table_shows_every_metric_with_its_yardstick():
    text = render_report(summary(VAL))
    for row in (
        "| PSNR | 36.50 dB |", "| SSIM | 0.9910 |", "| pixel accuracy | 99.912 % |", "| exact frames | 25.0 % |",
        "| dialog-box accuracy | 99.870 % |", "| token stability | 100.00 % |",
        "| codebook usage | 50.0 % (256 of 512) |", "| dead codes | 256 |", "| perplexity | 14.1 |",
        "| distinct tiles in the data | 254 |", "| perplexity of the data's tiles | 14.1 |",
    ):
        assert row in text, row
    assert "unchanged 8×8 tiles of consecutive frames" in text
    assert "| 1 ★ | 0.00200 | 30.00 | 0.00100 | 36.50 | 99.91 % |" in text  # pixel accuracy in the epoch table


def test_frames_without_annotations_show_no_dialog_figure():
    val = {k: v for k, v in VAL.items() if k != "dialog_accuracy"}
    assert "| dialog-box accuracy | – |" in render_report(summary(val))


def test_a_run_without_validation_has_no_quality_table():
    assert "Tokenizer quality" not in render_report(summary({}))


def test_tile_dictionaries_stand_next_to_the_model_from_the_epoch_that_scored_them():
    report = summary(VAL)
    report["epochs"][0]["baselines"] = {
        "k-means 512": {"psnr": 23.1, "pixel_accuracy": 0.95, "dialog_accuracy": 0.97, "codes": 512},
        "exact dictionary": {"psnr": 34.12, "pixel_accuracy": 0.99, "codes": 7237},
    }
    report["epochs"].append({**report["epochs"][0], "epoch": 2, "baselines": None})  # a later epoch keeps them
    text = render_report(report)
    assert "### Against tile dictionaries (8×8 tiles, one code each, same validation frames)" in text
    assert "| this model (epoch 2) | 512 | 36.50 dB | 99.912 % | 99.870 % |" in text
    assert "| k-means 512 | 512 | 23.10 dB | 95.000 % | 97.000 % |" in text
    assert "| exact dictionary | 7237 | 34.12 dB | 99.000 % | – |" in text


def test_no_dictionary_table_without_baselines():
    assert "Against tile dictionaries" not in render_report(summary(VAL))
