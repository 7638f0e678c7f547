"""The trained tokenizer as users take it away: encode/decode, export without pickle, tokenize a bucket.

Real parts: a tiny model trained by pokevq's own trainer, moto's S3 over HTTP behind the
fault proxy (a slow link, to kill a tokenization in the middle), a real Prefect API.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory, episode_frames):
    """A TINY model trained 2 epochs on 96 frames; its checkpoint file, and its validation reconstructions."""
    from pokevq.config import TrainConfig
    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage
    from pokevq.train.metrics import to_uint8
    from pokevq.train.trainer import Trainer

    root = tmp_path_factory.mktemp("trained")
    storage = LocalStorage(str(episode_frames))
    manifest = index_frames(storage, "", val_fraction=0.2, seed=0)
    config = TrainConfig(experiment_name="tok", batch_size=8, learning_rate=3e-3, num_workers=0, device="cpu", **TINY)
    trainer = Trainer(config, manifest, FrameSource(storage, FrameCache(root / "cache", max_items=200)), root)
    try:
        for epoch in (1, 2):
            result = trainer.train_epoch(epoch)
        originals, recon = trainer.preview()  # the validation reconstructions TensorBoard and the report show
    finally:
        trainer.close()
    return {"checkpoint": Path(result.checkpoint_path), "sha256": result.checkpoint_sha256,
            "originals": to_uint8(originals), "recon": to_uint8(recon), "manifest": manifest}


def test_encode_then_decode_is_training_reconstruction_to_the_pixel(trained):
    from pokevq import Tokenizer

    tok = Tokenizer.from_checkpoint(trained["checkpoint"], device="cpu")
    assert (tok.grid, tok.codebook_size, tok.image_size) == ((9, 10), 16, (72, 80))
    assert tok.lineage.checkpoint_sha256 == trained["sha256"] and tok.lineage.epoch == 2
    assert tok.lineage.experiment == "tok" and "psnr" in tok.lineage.metrics["val"]
    frames = trained["originals"].permute(0, 2, 3, 1).numpy()  # uint8 (B, H, W, 3)
    codes = tok.encode(frames)
    assert codes.dtype == torch.int64 and codes.shape == (len(frames), 9, 10)
    assert np.array_equal(tok.decode(codes), trained["recon"].permute(0, 2, 3, 1).numpy())
    # The same codes from PIL images, from floats, and from frames of another size resized as training does.
    from PIL import Image

    assert torch.equal(tok.encode([Image.fromarray(f) for f in frames]), codes)
    assert torch.equal(tok.encode(trained["originals"].float() / 255), codes)
    doubled = np.stack([np.asarray(Image.fromarray(f).resize((160, 144), Image.NEAREST)) for f in frames])
    assert torch.equal(tok.encode(doubled), codes)


@pytest.mark.parametrize("bad, message", [
    (lambda tok: tok.encode(torch.rand(2, 3, 64, 64)), r"float frames must be \(B, 3, 72, 80\)"),
    (lambda tok: tok.encode(np.zeros((2, 72, 80), np.uint8)), r"frames must be uint8 \(B, H, W, 3\)"),
    (lambda tok: tok.decode(torch.full((1, 9, 10), 16)), r"codes must be in 0\.\.15"),
    (lambda tok: tok.decode(torch.zeros(1, 8, 10, dtype=torch.long)), r"codes must be \(B, 9, 10\)"),
])
def test_bad_input_is_one_clear_line(trained, bad, message):
    from pokevq import Tokenizer
    from pokevq.errors import PokevqError

    tok = Tokenizer.from_checkpoint(trained["checkpoint"], device="cpu")
    with pytest.raises(PokevqError, match=message):
        bad(tok)


def test_export_loads_without_pickle_and_gives_the_same_codes(trained, tmp_path):
    from pokevq import Tokenizer
    from pokevq.errors import PokevqError

    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "pokevq", "export", str(trained["checkpoint"]), "--out", str(out),
                           "--format", "torchscript"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "tokenizer.torchscript.pt"]
    card = (out / "README.md").read_text()
    assert trained["sha256"] in card and "from_pretrained" in card and "| psnr |" in card
    frames = trained["originals"].permute(0, 2, 3, 1).numpy()
    expected = Tokenizer.from_checkpoint(trained["checkpoint"], device="cpu").encode(frames)
    assert torch.equal(Tokenizer.from_pretrained(out, device="cpu").encode(frames), expected)
    scripted = torch.jit.load(str(out / "tokenizer.torchscript.pt"))
    assert torch.equal(scripted.encode(trained["originals"].float() / 255), expected)
    # Nothing already written is replaced; a damaged export is one line.
    again = subprocess.run([sys.executable, "-m", "pokevq", "export", str(trained["checkpoint"]), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "not empty" in again.stderr
    (out / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PokevqError, match="not a usable exported pokevq tokenizer"):
        Tokenizer.from_pretrained(out)


def test_a_checkpoint_of_another_shape_or_corrupt_is_one_line(trained, tmp_path):
    from pokevq import Tokenizer
    from pokevq.errors import PokevqError

    state = torch.load(trained["checkpoint"], weights_only=True)
    state["model_config"]["codebook_size"] = 32  # the weights say 16
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(PokevqError, match="does not match its own model configuration"):
        Tokenizer.from_checkpoint(other)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(trained["checkpoint"].read_bytes()[:500])
    with pytest.raises(PokevqError, match="not a valid pokevq checkpoint"):
        Tokenizer.from_checkpoint(broken)


# ------------------------------------------------------------------ tokenize a bucket


@pytest.fixture
def proxy(moto_endpoint):
    from tests.helpers.s3_proxy import FaultProxy

    proxy = FaultProxy(moto_endpoint).start()
    yield proxy
    proxy.stop()


def _tokenize(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen([sys.executable, "-m", "pokevq", "tokenize", *args], env={**os.environ, **env},
                            stdout=handle, stderr=subprocess.STDOUT, text=True)


def _token_files(s3_client, bucket: str, prefix: str) -> dict[str, str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])
            if re.search(r"/game\d+/episode\d+\.parquet$", item["Key"])}


def test_tokenize_a_packed_bucket_resume_after_a_kill_and_decode(trained, proxy, prefect_harness, tmp_path, bucket,
                                                                 s3_client, episode_frames):
    from prefect.settings import PREFECT_API_URL

    from pokevq.data.pack import pack
    from pokevq.storage import S3Storage
    from pokevq.tokenizer.tokens import read_token_file

    upload_tree(s3_client, bucket, episode_frames, "pokemon_frames/")
    pack(S3Storage(bucket, "us-east-1", endpoint_url=proxy.url), "pokemon_frames", shard_bytes=16 * 1024, threads=4)
    s3_client.upload_file(str(trained["checkpoint"]), bucket, "checkpoints/tok/checkpoint_best.pt")
    checkpoint = f"s3://{bucket}/checkpoints/tok/checkpoint_best.pt"
    prefix = f"tokens/tok/{trained['sha256'][:12]}/"
    args = ["--checkpoint", checkpoint, "--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", proxy.url,
            "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--output-dir", str(tmp_path / "out")]
    env = {"PREFECT_API_URL": PREFECT_API_URL.value()}

    # A slow link to the shards: kill the run once it has written some episodes, not all.
    proxy.add_fault("delay", rf"^GET /{re.escape(bucket)}/pokemon_frames/_shards/.*\.tar", delay=0.5)
    first = _tokenize([*args, "--cache-dir", str(tmp_path / "cache1")], env, tmp_path / "first.log")
    deadline = time.monotonic() + 120
    while not _token_files(s3_client, bucket, prefix) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    before = _token_files(s3_client, bucket, prefix)
    assert 0 < len(before) < 6, (tmp_path / "first.log").read_text()[-2000:]

    proxy.clear_faults()
    proxy.seen.clear()
    second = _tokenize([*args, "--cache-dir", str(tmp_path / "cache2")], env, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    # Shard by shard (issue 24, item 6): every frame came out of a shard, each shard in one GET, no frame on its own.
    reads = [path.split("?")[0] for method, path, _ in list(proxy.seen) if method == "GET"]
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="pokemon_frames/_shards/")["Contents"]
    shards = {item["Key"] for item in listed if item["Key"].endswith(".tar")}
    shard_reads = Counter(path for path in reads if path.endswith(".tar"))
    assert not [path for path in reads if path.endswith(".png")], reads  # never frame by frame
    assert shard_reads and max(shard_reads.values()) == 1, shard_reads  # one GET per shard
    assert {path.removeprefix(f"/{bucket}/") for path in shard_reads} <= shards
    output = (tmp_path / "second.log").read_text()
    assert f"{6 - len(before)} new episode file(s) ({len(before)} already there)" in output
    assert "sample PSNR" in output
    after = _token_files(s3_client, bucket, prefix)
    assert len(after) == 6 and all(after[key] == etag for key, etag in before.items())  # none rewritten

    # Every readable frame of the manifest, exactly once, with its ETag; codes the checkpoint gives.
    from pokevq import Tokenizer

    tok = Tokenizer.from_checkpoint(trained["checkpoint"], device="cpu")
    seen: Counter = Counter()
    for key in after:
        data = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        tokens = read_token_file(data, key, expect_sha256=trained["sha256"])
        seen.update(tokens.keys)
        assert list(tokens.frames) == sorted(tokens.frames)
        first_frame = s3_client.get_object(Bucket=bucket, Key=tokens.keys[0])
        assert tokens.etags[0] == first_frame["ETag"].strip('"')
        from pokevq.data.frames import decode_frame_uint8

        pixels = decode_frame_uint8(first_frame["Body"].read(), (72, 80))
        assert torch.equal(tok.encode(pixels[None])[0], torch.from_numpy(tokens.codes[0]))
    uploaded = {f"pokemon_frames/{p.relative_to(episode_frames).as_posix()}" for p in episode_frames.rglob("*.png")}
    assert set(seen) == uploaded and set(seen.values()) == {1}
    index = s3_client.get_object(Bucket=bucket, Key=prefix + "index.parquet")["Body"].read()
    import pandas as pd

    assert pd.read_parquet(io.BytesIO(index))["frames"].sum() == len(uploaded)
    import json

    lineage = json.loads(s3_client.get_object(Bucket=bucket, Key=prefix + "lineage.json")["Body"].read())
    assert lineage["checkpoint_sha256"] == trained["sha256"] and lineage["checkpoint_uri"] == checkpoint
    assert lineage["manifest"] == f"s3://{bucket}/{prefix}manifest.parquet" and lineage["pokevq_version"]
    assert lineage["model"]["codebook_size"] == 16 and lineage["written_at"]
    manifest = s3_client.get_object(Bucket=bucket, Key=prefix + "manifest.parquet")["Body"].read()
    assert set(pd.read_parquet(io.BytesIO(manifest))["key"]) == uploaded

    # Decode one episode back to frames, with the PSNR against the originals in the bucket.
    one = sorted(after)[0]
    done = subprocess.run([sys.executable, "-m", "pokevq", "decode", f"s3://{bucket}/{one}", "--out",
                           str(tmp_path / "decoded"), "--s3-endpoint-url", proxy.url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"PSNR against the original frames: [\d.]+ dB over 16 frames", done.stdout)
    assert len(list((tmp_path / "decoded").glob("frame_*.png"))) == 16 and (tmp_path / "decoded/episode.gif").is_file()


def test_hostile_or_foreign_token_files_are_refused_in_one_line(trained, tmp_path):
    from pokevq.errors import PokevqError
    from pokevq.tokenizer.tokens import episode_bytes, read_token_file

    codes = np.zeros((9, 10), dtype=np.int64)
    good = episode_bytes("game1", "episode1", [(1, "k.png", "e", codes)], checkpoint_sha256="a" * 64, grid=(9, 10),
                         codebook_size=16)
    assert read_token_file(good, "good").codes.shape == (1, 9, 10)
    with pytest.raises(PokevqError, match="written by checkpoint aaaaaaaaaaaa, not by bbbbbbbbbbbb"):
        read_token_file(good, "good", expect_sha256="b" * 64)
    out_of_range = episode_bytes("g", "e", [(1, "k", "e", codes + 16)], checkpoint_sha256="a" * 64, grid=(9, 10),
                                 codebook_size=16)
    with pytest.raises(PokevqError, match="codes out of range"):
        read_token_file(out_of_range, "range")
    import pyarrow as pa
    import pyarrow.parquet as pq

    hostile = pa.table({"frame": pa.array([1], pa.int64()), "key": ["../../etc/passwd"], "etag": ["e"],
                        "codes": pa.array([[1, 2, 3]], pa.list_(pa.int32()))})  # 3 codes, not 9x10
    hostile = hostile.replace_schema_metadata({b"pokevq": b'{"format": "pokevq-tokens/1", "game": "g", '
                                               b'"episode": "e", "checkpoint_sha256": "a", "grid": [9, 10], '
                                               b'"codebook_size": 16}'})
    sink = io.BytesIO()
    pq.write_table(hostile, sink)
    wrong_grid = sink.getvalue()
    for data, name in ((good[:100], "truncated"), (b"PAR1" + os.urandom(500) + b"PAR1", "noise"),
                       (wrong_grid, "grid")):
        with pytest.raises(PokevqError, match="not a usable pokevq token file"):
            read_token_file(data, name)


def test_decode_refuses_a_hostile_file_a_wrong_checkpoint_and_a_used_folder_in_one_line(trained, tmp_path, capsys):
    """`pokevq decode` as a user runs it (issue 24, item 6): each refusal is one `Error:` line, nothing is
    written into a new folder, and frames already decoded are never replaced."""
    import json

    from pokevq.cli.main import main
    from pokevq.tokenizer.tokens import episode_bytes

    sha = trained["sha256"]
    token_set = tmp_path / "tokens" / "tok" / sha[:12]
    (token_set / "game1").mkdir(parents=True)
    (token_set / "lineage.json").write_text(json.dumps({"checkpoint_uri": str(trained["checkpoint"]),
                                                       "checkpoint_sha256": sha}))
    codes = np.arange(90, dtype=np.int64).reshape(9, 10) % 16
    good = token_set / "game1" / "episode1.parquet"
    good.write_bytes(episode_bytes("game1", "episode1", [(n, f"k{n}.png", "e", codes) for n in (1, 2)],
                                   checkpoint_sha256=sha, grid=(9, 10), codebook_size=16))
    hostile = {  # frame keys that climb out, noise that looks like Parquet, codes out of range, cut short
        "noise.parquet": b"PAR1" + os.urandom(600) + b"PAR1",
        "range.parquet": episode_bytes("game1", "range", [(1, "k", "e", codes + 16)], checkpoint_sha256=sha,
                                       grid=(9, 10), codebook_size=16),
        "short.parquet": good.read_bytes()[:200],
    }
    for name, data in hostile.items():
        (token_set / "game1" / name).write_bytes(data)
    garbage_lineage = tmp_path / "tokens" / "tok" / "000000000000"
    (garbage_lineage / "game1").mkdir(parents=True)
    (garbage_lineage / "lineage.json").write_bytes(b"\x00{not json")
    (garbage_lineage / "game1" / "episode1.parquet").write_bytes(good.read_bytes())
    state = torch.load(trained["checkpoint"], weights_only=True)
    name = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][name] = state["model"][name] + 1  # another checkpoint of the same shape
    other = tmp_path / "other.pt"
    torch.save(state, other)
    other_bytes = other.read_bytes()

    def decode(*args: str) -> tuple[int, str]:
        rc = main(["decode", *args])
        captured = capsys.readouterr()
        return rc, captured.err

    done = tmp_path / "done"
    assert decode(str(good), "--out", str(done))[0] == 0
    before = {path.name: path.read_bytes() for path in done.iterdir()}
    assert "frame_00001.png" in before and "episode.gif" in before
    cases = [
        ((str(good), "--out", str(done)), f"Error: {done} already holds decoded frames"),
        ((str(good), "--out", str(tmp_path / "o1"), "--checkpoint", str(other)),
         f"Error: {good} was written by checkpoint {sha[:12]}, not by {other}"),
        ((str(good), "--out", str(other)), f"Error: --out {other} is not a folder pokevq can write"),
        ((str(good), "--out", str(tmp_path / "o2"), "--checkpoint", str(tmp_path / "none.pt")),
         "Error: Checkpoint not found: "),
        ((str(garbage_lineage / "game1" / "episode1.parquet"), "--out", str(tmp_path / "o3")),
         f"Error: No lineage.json next to {garbage_lineage / 'game1' / 'episode1.parquet'} names its checkpoint"),
        *[((str(token_set / "game1" / name), "--out", str(tmp_path / f"o-{name}")),
           f"Error: {token_set / 'game1' / name} is not a usable pokevq token file") for name in hostile],
    ]
    for args, expected in cases:
        rc, err = decode(*args)
        errors = [line for line in err.splitlines() if line.startswith("Error: ")]
        assert rc == 1 and len(errors) == 1 and errors[0].startswith(expected), (args, err)
        assert "Traceback" not in err
        out = Path(args[2])
        assert out in (done, other) or not out.exists() or not any(out.iterdir()), args  # nothing written
    assert {path.name: path.read_bytes() for path in done.iterdir()} == before  # nothing replaced
    assert other.read_bytes() == other_bytes


def test_tokenize_benchmark_runs_and_writes_every_frame(tmp_path):
    import json

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "TOKENIZE.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.tokenize", "--quick", "--out", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["frames_written"] == result["frames"] == 256 and result["episodes"] == 8
    assert result["forward_fps"] > 0 and result["tokenize_fps"] > 0
    assert result["ratio"] == result["tokenize_fps"] / result["forward_fps"]
    assert "ratio (target >= 0.8)" in out.read_text()
