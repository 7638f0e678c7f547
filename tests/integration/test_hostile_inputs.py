"""Hostile inputs through the real pipeline: what unit tests of one module cannot show.

`tests/test_frames.py`, `tests/test_cache.py` and `tests/test_checkpoint.py` cover decoding, cache
file names and checkpoint loading one function at a time. Here the same kinds of input go the whole
way: objects with hostile keys in moto's S3, listed by the manifest and read through the cache by
the dataset; odd frames and a cache at its byte limit in one real flow run; malformed `--resume`
URIs and unusable checkpoints through the `pokevq` command, as a user meets them.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from flows import train
from pokevq import TrainConfig
from pokevq.data import FrameSource
from pokevq.data.cache import FrameCache, _cache_name
from pokevq.data.manifest import index_frames
from pokevq.storage import S3Storage
from pokevq.train.checkpoint import FORMAT_VERSION
from tests.helpers.cli_cases import run_cli_cases
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY
from tests.helpers.runs import TINY_FLAGS as MODEL_FLAGS

pytestmark = pytest.mark.hostile

TINY_FLAGS = [*MODEL_FLAGS, "--num-workers", "0", "--batch-size", "4", "--epochs", "1"]

# Keys a bucket may hold: path traversal, absolute paths, encoded dots, unicode, spaces, a 1,000-character name.
LONG_KEY = "pokemon_frames/long/" + "x" * (1000 - len("pokemon_frames/long/") - len(".png")) + ".png"
HOSTILE_FRAME_KEYS = [
    "pokemon_frames/hostile/../../../../escape_dotdot.png",
    "pokemon_frames//leading_slash_inside.png",
    "pokemon_frames/%2e%2e/%2e%2e/percent_dotdot.png",
    "pokemon_frames/enc/%2e%2e%2f%2e%2e%2fencoded_slash.png",
    "pokemon_frames/ünïcødé/épisode 1/frame_ß_001.png",
    "pokemon_frames/emoji/🎮/frame_🎮.png",
    "pokemon_frames/with space/ep 1/frame 001.png",
    "pokemon_frames/bs\\..\\..\\backslashes.png",
    "pokemon_frames/./dot/./frame.png",
    LONG_KEY,
]
TOP_LEVEL_KEYS = ["../../escape_top.png", "/abs/leading_slash.png", "/etc/cron.d/evil.png"]


@pytest.fixture(scope="module")
def s3(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


def _new_bucket(s3) -> str:
    name = f"pokevq-hostile-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def _png(color: tuple[int, int, int], size: tuple[int, int] = (160, 144)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file() or path.is_symlink()}


def _escape_targets(cache_dir: Path, keys: list[str]) -> list[Path]:
    """Where a key used as a path would land: none of these may ever exist."""
    targets = [Path("/abs/leading_slash.png"), Path("/etc/cron.d/evil.png")]
    for key in keys:
        targets.append(Path(os.path.normpath(cache_dir / key.lstrip("/"))))
        targets.append(Path(os.path.normpath(cache_dir / key.replace("\\", "/"))))
    return targets


def test_hostile_keys_are_listed_cached_and_read_without_escaping_the_cache(moto_endpoint, s3, tmp_path):
    bucket = _new_bucket(s3)
    keys = HOSTILE_FRAME_KEYS + TOP_LEVEL_KEYS
    payloads = {key: _png((17 * i % 256, 255 - 9 * i % 256, 40)) for i, key in enumerate(keys)}
    for key, body in payloads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="..", Body=b"not a frame")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    watched = tmp_path.parent  # this session's temp root; deeper escapes are checked by path below
    before = _files(watched)

    manifest = index_frames(storage, "", val_fraction=0.0, seed=0)  # the whole bucket, top-level keys too
    assert sorted(manifest["key"]) == sorted(keys)  # every one listed, byte for byte
    cache_dir = tmp_path / "sandbox" / "cache"
    cache = FrameCache(cache_dir, max_items=100)
    source = FrameSource(storage, cache)
    first = [source.read(key, str(etag)) for key, etag in zip(manifest["key"], manifest["etag"])]
    assert [hit for _, hit in first] == [False] * len(keys)
    second = [source.read(key, str(etag)) for key, etag in zip(manifest["key"], manifest["etag"])]
    assert [hit for _, hit in second] == [True] * len(keys)
    for (data, _), (again, _), key in zip(first, second, manifest["key"]):
        assert data == again == payloads[key]

    created = _files(watched) - before
    resolved_cache = cache_dir.resolve()
    assert created and all(path.resolve().is_relative_to(resolved_cache) for path in created), sorted(created)
    assert len([p for p in created if p.suffix == ".frame"]) == len(keys)
    for key, etag in zip(manifest["key"], manifest["etag"]):  # each cached file holds exactly its object
        assert cache.path_for(storage.namespace, key, str(etag)).read_bytes() == payloads[key]
    for target in _escape_targets(resolved_cache, keys):
        assert not target.exists() or target.resolve().is_relative_to(resolved_cache), target


def _odd_frames() -> dict[str, bytes]:
    """Frames a scraped dataset really contains; all decode except the decompression bomb."""
    width, height = 160, 144
    gradient = (np.arange(width * height, dtype=np.uint32).reshape(height, width) * 7 % 65536).astype(np.uint16)
    palette = Image.new("P", (width, height), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    red, blue = Image.new("RGB", (width, height), (255, 0, 0)), Image.new("RGB", (width, height), (0, 0, 255))
    huge = Image.new("RGB", (4000, 4000), (30, 60, 90))
    huge.paste((200, 10, 10), (0, 0, 4000, 40))
    return {
        "bits16.png": _encode(Image.fromarray(gradient), "PNG"),  # mode I;16
        "palette_transparent.png": _encode(palette, "PNG", transparency=1),
        "animated.png": _encode(red, "PNG", save_all=True, append_images=[blue], duration=100, loop=0),  # APNG
        "animated_gif_named.png": _encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0),
        "animated.webp": _encode(red, "WEBP", save_all=True, append_images=[blue], duration=100, loop=0),
        "cmyk.jpg": _encode(Image.new("CMYK", (width, height), (0, 255, 255, 0)), "JPEG", quality=90),
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (255, 255, 255)), "PNG"),
        "huge_4000x4000.png": _encode(huge, "PNG", compress_level=1),
        "bomb_5000x5000.png": _encode(Image.new("L", (5000, 5000), 0), "PNG", compress_level=1),
    }


def test_odd_frames_hostile_keys_and_a_full_cache_through_one_flow_run(
    prefect_harness, moto_endpoint, s3, tmp_path, synth_frames
):
    bucket = _new_bucket(s3)
    upload_tree(s3, bucket, synth_frames)
    odd = _odd_frames()
    for name, body in odd.items():
        s3.put_object(Bucket=bucket, Key=f"pokemon_frames/hostile/odd/{name}", Body=body)
    for i, key in enumerate(HOSTILE_FRAME_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=_png((10 + 20 * i, 200, 255 - 20 * i)))
    cache_dir = tmp_path / "cache"
    max_bytes = 20_000  # a handful of frames: nothing but the previews' frames is kept, frames are read each epoch
    watched = tmp_path.parent
    before = _files(watched)

    summary = train(TrainConfig(
        use_s3=True, s3_bucket=bucket, s3_endpoint_url=moto_endpoint, experiment_name="hostile", num_epochs=2,
        batch_size=4, learning_rate=1e-3, num_workers=0, local_cache_dir=str(cache_dir), max_cache_bytes=max_bytes,
        output_dir=str(tmp_path / "outputs"), no_fallback=True, **TINY,
    ))

    assert summary["epochs_trained"] == 2
    frames = 24 + len(odd) + len(HOSTILE_FRAME_KEYS)
    report = s3.get_object(Bucket=bucket, Key="reports/hostile/report.md")["Body"].read().decode()
    assert f"Frames indexed: {frames}" in report
    # Only the decompression bomb is skipped (and said so); every other odd frame decoded.
    assert summary["skipped_frames"] == 1
    assert "- Skipped frames: 1" in report
    assert "| `pokemon_frames/hostile/odd/bomb_5000x5000.png` | image too large: 5000x5000 pixels" in report

    # The local store stayed within its byte limit and holds only whole frames.
    cached = [p for p in cache_dir.rglob("*.frame") if p.is_file()]  # the frame byte cache (previews' frames)
    assert sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) <= max_bytes
    assert len(cached) < frames
    assert not list(cache_dir.rglob("*.tmp")) and not list(cache_dir.rglob("*.part"))  # nothing half-written left
    history = summary["final"]
    assert history["cache_hit_rate"] < 1.0  # frames that do not fit were fetched again
    namespace = f"s3://{bucket}"
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="pokemon_frames/"):
        for item in page["Contents"]:
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            objects[_cache_name(namespace, item["Key"], item["ETag"].strip('"'))] = body
    for path in cached:
        assert path.read_bytes() == objects[path.name.removesuffix(".frame")], path  # never half a frame

    created = _files(watched) - before
    allowed = [cache_dir.resolve(), (tmp_path / "outputs").resolve()]
    stray = [p for p in created if not any(p.resolve().is_relative_to(root) for root in allowed)]
    assert not stray, stray
    for target in _escape_targets(cache_dir.resolve(), HOSTILE_FRAME_KEYS):
        assert not target.exists() or target.resolve().is_relative_to(cache_dir.resolve()), target


def test_decoding_a_4000x4000_frame_keeps_memory_bounded(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_odd_frames()["huge_4000x4000.png"])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_odd_frames()["bomb_5000x5000.png"])
    script = (
        "import resource, sys\n"
        "from pokevq.data.frames import decode_frame\n"
        "from pokevq.errors import FrameDecodeError\n"
        "decode_frame(open(sys.argv[1], 'rb').read(), (72, 80))\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    decode_frame(open(sys.argv[3], 'rb').read(), (72, 80))\nexcept FrameDecodeError as exc:\n"
        "    print('bomb:', exc)\n"
        "after_bomb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = decode_frame(open(sys.argv[2], 'rb').read(), (72, 80))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print('shape', tuple(t.shape), 'bomb_kib', after_bomb - base, 'huge_kib', peak - base)\n"
    )
    small = tmp_path / "small.png"
    small.write_bytes(_png((1, 2, 3)))
    done = subprocess.run([sys.executable, "-c", script, str(small), str(huge), str(bomb)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("bomb: image too large: 5000x5000 pixels")
    words = lines[1].split()
    assert words[1:4] == ["(3,", "72,", "80)"]
    bomb_kib, huge_kib = int(words[5]), int(words[7])
    assert bomb_kib < 16 * 1024  # refused from its header, before any pixel is allocated
    assert huge_kib < 256 * 1024  # 48 MB of pixels decoded, bounded well below a gigabyte


# ----------------------------------------------------------------------------- --resume through the CLI


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _checkpoint(hidden_channels: int = 8, format_version: int | None = None, extra=None) -> bytes:
    from pokevq.model.vqvae import VQVAE, ModelConfig
    from pokevq.train.checkpoint import build_checkpoint

    config = ModelConfig(image_size=(72, 80), hidden_channels=hidden_channels, embedding_dim=4, codebook_size=16)
    model = VQVAE(config)
    state = build_checkpoint(
        model, torch.optim.AdamW(model.parameters()), epoch=1, global_step=1, config={}, model_config=config.to_dict(),
        metrics=extra or {}, history=[], best=None,
    ).to_state()
    if format_version is not None:
        state["format_version"] = format_version
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_resume_with_malformed_uris_and_unusable_checkpoints_is_one_line_each(
    prefect_harness, moto_endpoint, s3, tmp_path, synth_frames
):
    from prefect.settings import PREFECT_API_URL

    bucket = _new_bucket(s3)
    upload_tree(s3, bucket, synth_frames)
    marker = tmp_path / "PWNED"
    evil = {"format_version": 1, "model": {}, "optimizer": {}, "epoch": 1, "global_step": 1, "config": {},
            "model_config": {}, "metrics": {"x": _Payload(marker)}}
    evil_buffer = io.BytesIO()
    torch.save(evil, evil_buffer)
    assert b"posix" in evil_buffer.getvalue() or b"system" in evil_buffer.getvalue()  # a real payload
    good = _checkpoint()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    prefix = "checkpoints/hostile-ckpt/"
    uploads = {
        "future.pt": (_checkpoint(format_version=99), None),
        "other_shape.pt": (_checkpoint(hidden_channels=16), None),
        "random.pt": (os.urandom(4096), None),
        "evil.pt": (evil_buffer.getvalue(), None),
        "checkpoint_epoch_7.pt": (bytes(flipped), hashlib.sha256(good).hexdigest()),  # altered after upload
    }
    for name, (body, sha) in uploads.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body,
                      Metadata={"sha256": sha or hashlib.sha256(body).hexdigest()})

    base = ["train", "--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", moto_endpoint, "--no-fallback",
            "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "outputs"), *TINY_FLAGS]
    uri = f"s3://{bucket}/{prefix}"
    cases = [
        (["--resume", "s3:/x", "--experiment-name", "bad-uri"], "Error: Checkpoint not found: s3:/x"),
        (["--resume", "s3://", "--experiment-name", "bad-uri"], "Error: Checkpoint not found: s3://"),
        (["--resume", "http://x/y.pt", "--experiment-name", "bad-uri"], "Error: Checkpoint not found: http://x/y.pt"),
        (["--resume", uri + "future.pt"],
         f"Error: Checkpoint {uri}future.pt has format version 99, newer than this pokevq supports ({FORMAT_VERSION})"),
        (["--resume", uri + "other_shape.pt"],
         f"Error: Checkpoint {uri}other_shape.pt does not match the configured model: "
         "hidden_channels=16 (configured 8)"),
        (["--resume", uri + "random.pt"], f"Error: Checkpoint {uri}random.pt is not a valid pokevq checkpoint: "),
        (["--resume", uri + "evil.pt"],
         f"Error: Checkpoint {uri}evil.pt is not a valid pokevq checkpoint: it contains Python objects that are not "
         "allowed in a checkpoint (refused for safety)"),
        (["--resume", uri + "checkpoint_epoch_7.pt"], f"Error: Checkpoint {uri}checkpoint_epoch_7.pt is corrupt: "),
    ]
    # One interpreter runs every case through `pokevq.cli.main`, exactly what the `pokevq` command runs.
    outputs = run_cli_cases({str(i): (base + extra, []) for i, (extra, _) in enumerate(cases)},
                            {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, tmp_path)
    for i, (_, expected) in enumerate(cases):
        rc, output = outputs[str(i)]
        assert rc == 1, output[-2000:]
        errors = [line for line in output.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and errors[0].startswith(expected), (expected, errors, output[-2000:])
        assert "Traceback" not in output, output[-3000:]
    assert not marker.exists()  # the malicious pickle never ran
    assert not (tmp_path / "http:").exists() and not (tmp_path / "s3:").exists()
