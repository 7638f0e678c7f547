"""Every user-facing input given a bad value, as a user meets it: one `Error:` line naming the input.

One table of cases: the flags of `train`, `tokenize`, `decode`, `pack`, `synth`, `upload`, `export`,
`demo` and `stack up`, each `POKEVQ_*` knob, the files pokevq reads from a bucket (the shard index), and
S3 answering 5xx errors other than 503 (through the fault proxy). Every case runs through
`pokevq.cli.main`, exactly what the `pokevq` command runs, all of them in one interpreter
(tests/helpers/cli_cases.py). Each must end in exactly one `Error:` line that names the input, with no
traceback, and leave every bucket as it was (a lease taken before a bad file is found is released, so it
is gone too).
"""

from __future__ import annotations

import io
import os
import re
import uuid
from types import SimpleNamespace

import boto3
import pandas as pd
import pytest

from tests.helpers.cli_cases import run_cli_cases
from tests.helpers.frames import upload_tree
from tests.helpers.runs import TINY_FLAGS
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.hostile

TRAIN = [*TINY_FLAGS, "--num-workers", "0", "--epochs", "1", "--batch-size", "4", "--no-fallback"]
INDEX = "pokemon_frames/_shards/index.parquet"


def _snapshot(s3, bucket: str) -> dict[str, str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}


def _cases(b: SimpleNamespace) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (pokevq arguments, environment for the case, what the `Error:` line must name)."""
    s3 = ["--use-s3", "--s3-bucket", b.frames, "--s3-endpoint-url", b.endpoint]
    train = ["train", *s3, *TRAIN, "--cache-dir", str(b.root / "cache"), "--output-dir", str(b.root / "out")]
    checkpoint = f"s3://{b.frames}/checkpoints/none/checkpoint_best.pt"
    tokenize = ["tokenize", "--checkpoint", checkpoint, *s3, "--output-dir", str(b.root / "out")]
    bucket_flags = ["--s3-bucket", b.frames, "--s3-endpoint-url", b.endpoint]
    quick = {"POKEVQ_TASK_RETRY_DELAYS": "", "POKEVQ_S3_MAX_ATTEMPTS": "2"}
    cases = {
        # train's flags
        "train --device": ([*train, "--device", "gpu"], {}, "--device"),
        "train --precision": ([*train, "--precision", "fp16"], {}, "--precision"),
        "train --num-workers": ([*train, "--num-workers", "-1"], {}, "--num-workers"),
        "train --max-cache-size": ([*train, "--max-cache-size", "0"], {}, "--max-cache-size"),
        "train --max-cache-bytes": ([*train, "--max-cache-bytes", "lots"], {}, "--max-cache-bytes"),
        "train --max-cache-bytes 0": ([*train, "--max-cache-bytes", "0"], {}, "--max-cache-bytes"),
        "train --checkpoint-every-steps": ([*train, "--checkpoint-every-steps", "-1"], {},
                                           "--checkpoint-every-steps"),
        "train --frames-dir": ([*train, "--frames-dir", "a/../b"], {}, "--frames-dir"),
        "train --s3-checkpoint-prefix": ([*train, "--s3-checkpoint-prefix", ".."], {}, "--s3-checkpoint-prefix"),
        "train --s3-tensorboard-prefix": ([*train, "--s3-tensorboard-prefix", "a/../.."], {},
                                          "--s3-tensorboard-prefix"),
        "train --s3-logs-prefix": ([*train, "--s3-logs-prefix", ".."], {}, "--s3-logs-prefix"),
        "train --s3-region": ([*train, "--s3-region", "us_east!"], {}, "--s3-region"),
        "train --s3-endpoint-url": ([*train[:5], "ftp://x", *train[6:]], {}, "--s3-endpoint-url"),
        "train --batch-size": ([*train, "--batch-size", "many"], {}, "--batch-size"),
        "train --data-path": ([*train, "--data-path", "fast"], {}, "--data-path"),
        "train --time-budget": ([*train, "--time-budget", "soon"], {}, "--time-budget"),
        "train --unknown": ([*train, "--epochz", "1"], {}, "--epochz"),
        "train --experiment-name": ([*train, "--experiment-name", "a/b"], {}, "--experiment-name"),
        "train --learning-rate": ([*train, "--learning-rate", "0"], {}, "--learning-rate"),
        "train --lr-schedule": ([*train, "--lr-schedule", "sawtooth"], {}, "--lr-schedule"),
        "train --warmup-steps": ([*train, "--warmup-steps", "-5"], {}, "--warmup-steps"),
        "train --resume": ([*train, "--resume", f"s3://{b.frames}"], {}, f"s3://{b.frames}"),  # names no object
        "train --resume not a checkpoint": ([*train, "--resume", f"s3://{b.columnless}/{INDEX}"], {},
                                            f"s3://{b.columnless}/{INDEX}"),  # an object, but no checkpoint
        "train --val-fraction": ([*train, "--val-fraction", "1.5"], {}, "--val-fraction"),
        "train --max-steps": ([*train, "--max-steps", "-1"], {}, "--max-steps"),
        "train --nproc-per-node": ([*train, "--nproc-per-node", "zero"], {}, "--nproc-per-node"),
        "train --nnodes": ([*train, "--nnodes", "0"], {}, "--nnodes"),
        "train --node-rank": ([*train, "--node-rank", "3"], {}, "--node-rank"),
        "train --rdzv-endpoint": ([*train, "--rdzv-endpoint", "nohost"], {}, "--rdzv-endpoint"),
        "train --image-size": ([*train, "--image-size", "big"], {}, "--image-size"),
        "train --hidden-channels": ([*train, "--hidden-channels", "0"], {}, "--hidden-channels"),
        "train --codebook-size": ([*train, "--codebook-size", "-4"], {}, "--codebook-size"),
        "train --embedding-dim": ([*train, "--embedding-dim", "0"], {}, "--embedding-dim"),
        "train --downsample": ([*train, "--downsample", "3"], {}, "--downsample"),
        "train --architecture": ([*train, "--architecture", "transformer"], {}, "--architecture"),
        "train --quantizer": ([*train, "--quantizer", "kmeans"], {}, "--quantizer"),
        "train --codebook-init": ([*train, "--codebook-init", "zeros"], {}, "--codebook-init"),
        "train --dead-code-restart": ([*train, "--dead-code-restart", "sometimes"], {}, "--dead-code-restart"),
        "train --code-dim": ([*train, "--code-dim", "-1"], {}, "--code-dim"),
        "train --encoder-kernel": ([*train, "--encoder-kernel", "5"], {}, "--encoder-kernel"),
        # tokenize's flags
        "tokenize --batch-size": ([*tokenize, "--batch-size", "0"], {}, "--batch-size"),
        "tokenize --num-workers": ([*tokenize, "--num-workers", "-1"], {}, "--num-workers"),
        "tokenize --device": ([*tokenize, "--device", "mps"], {}, "--device"),
        "tokenize --frames-dir": ([*tokenize, "--frames-dir", "a/../b"], {}, "--frames-dir"),
        "tokenize --s3-endpoint-url": ([*tokenize[:7], "not-a-url", *tokenize[8:]], {}, "--s3-endpoint-url"),
        "tokenize --s3-bucket": ([*tokenize[:4], *tokenize[6:]], {}, "--s3-bucket"),
        "tokenize --s3-region": ([*tokenize, "--s3-region", "us_east!"], {}, "--s3-region"),
        "tokenize --output-dir": (["tokenize", "--checkpoint", str(b.root / "none.pt"), "--frames-dir", str(b.synth),
                                   "--output-dir", str(b.root / "a-file")], {}, "--output-dir"),
        "tokenize --cache-dir": ([*tokenize, "--cache-dir", str(b.root / "a-file" / "cache")], {}, "--cache-dir"),
        "tokenize --bf16": ([*tokenize, "--device", "cpu", "--bf16"], {}, "--bf16"),
        "tokenize --checkpoint": ([*tokenize[:2], "", *tokenize[3:]], {}, "--checkpoint"),
        # decode's flags (a hostile file, a wrong checkpoint, an --out holding frames: test_tokenizer.py)
        "decode TOKENS_FILE": (["decode", f"s3://{b.frames}/tokens/none/game1/episode1.parquet", "--out",
                                str(b.root / "decoded"), "--s3-endpoint-url", b.endpoint], {},
                               f"s3://{b.frames}/tokens/none/game1/episode1.parquet"),
        "decode --s3-region": (["decode", f"s3://{b.frames}/t.parquet", "--out", str(b.root / "decoded"),
                                "--s3-region", "us_east!"], {}, "--s3-region"),
        "decode --s3-endpoint-url": (["decode", f"s3://{b.frames}/t.parquet", "--out", str(b.root / "decoded"),
                                      "--s3-endpoint-url", "nope"], {}, "--s3-endpoint-url"),
        "decode --out": (["decode", str(b.root / "none.parquet")], {}, "--out"),
        # pack's flags
        "pack --shard-size": (["pack", *bucket_flags, "--shard-size", "huge"], {}, "--shard-size"),
        "pack --threads": (["pack", *bucket_flags, "--threads", "0"], {}, "--threads"),
        "pack --frames-dir": (["pack", *bucket_flags, "--frames-dir", "a/../b"], {}, "--frames-dir"),
        "pack --s3-endpoint-url": (["pack", "--s3-bucket", b.frames, "--s3-endpoint-url", "not-a-url"], {},
                                   "--s3-endpoint-url"),
        "pack --s3-region": (["pack", *bucket_flags, "--s3-region", "us_east!"], {}, "--s3-region"),
        "pack --s3-bucket": (["pack", "--s3-endpoint-url", b.endpoint], {}, "--s3-bucket"),
        # synth's flags
        "synth --games": (["synth", "--out", str(b.root / "synth"), "--games", "0"], {}, "--games"),
        "synth --episodes": (["synth", "--out", str(b.root / "synth"), "--episodes", "0"], {}, "--episodes"),
        "synth --frames": (["synth", "--out", str(b.root / "synth"), "--frames", "-3"], {}, "--frames"),
        "synth --style": (["synth", "--out", str(b.root / "synth"), "--style", "fancy"], {}, "--style"),
        "synth --out": (["synth", "--out", str(b.root / "a-file"), "--frames", "1"], {}, "--out"),
        "synth --seed": (["synth", "--out", str(b.root / "synth"), "--seed", "-1"], {}, "--seed"),
        # upload's flags
        "upload DIRECTORY": (["upload", str(b.root / "nowhere"), *bucket_flags], {}, str(b.root / "nowhere")),
        "upload --threads": (["upload", str(b.synth), *bucket_flags, "--threads", "0"], {}, "--threads"),
        "upload --frames-dir": (["upload", str(b.synth), *bucket_flags, "--frames-dir", "../x"], {},
                                "--frames-dir"),
        "upload --s3-bucket": (["upload", str(b.synth), "--s3-endpoint-url", b.endpoint], {}, "--s3-bucket"),
        "upload --s3-region": (["upload", str(b.synth), *bucket_flags, "--s3-region", "us_east!"], {}, "--s3-region"),
        "upload --s3-sse": (["upload", str(b.synth), *bucket_flags, "--s3-sse", "DES"], {}, "--s3-sse"),
        "upload --s3-endpoint-url": (["upload", str(b.synth), "--s3-bucket", b.frames, "--s3-endpoint-url", "x:/"],
                                     {}, "--s3-endpoint-url"),
        "upload --expected-bucket-owner": (["upload", str(b.synth), *bucket_flags, "--expected-bucket-owner",
                                            "123"], {}, "--expected-bucket-owner"),
        "upload --s3-kms-key-id": (["upload", str(b.synth), *bucket_flags, "--s3-kms-key-id", "k"], {},
                                   "--s3-kms-key-id"),
        # export's, demo's and stack up's flags: refused by the parser, before anything starts
        "export --format": (["export", str(b.root / "none.pt"), "--out", str(b.root / "exported"), "--format",
                             "onnx"], {}, "--format"),
        "demo --epochs": (["demo", "--epochs", "0", "--out", str(b.root / "demo")], {}, "--epochs"),
        "stack up --port": (["stack", "up", "--port", "70000"], {}, "--port"),
        "stack up --cron": (["stack", "up", "--cron", "every night"], {}, "--cron"),
        "stack up --timezone": (["stack", "up", "--timezone", "Mars/Olympus"], {}, "--timezone"),
        "stack up --pool": (["stack", "up", "--pool", "a/b"], {}, "--pool"),
        # the POKEVQ_* knobs: the run stops before it starts
        "POKEVQ_S3_MAX_ATTEMPTS": (train, {"POKEVQ_S3_MAX_ATTEMPTS": "0"}, "POKEVQ_S3_MAX_ATTEMPTS"),
        "POKEVQ_LEASE_TTL": (train, {"POKEVQ_LEASE_TTL": "soon"}, "POKEVQ_LEASE_TTL"),
        "POKEVQ_TASK_RETRY_DELAYS": (train, {"POKEVQ_TASK_RETRY_DELAYS": "2,-1"}, "POKEVQ_TASK_RETRY_DELAYS"),
        "POKEVQ_FRAME_LOG": (train, {"POKEVQ_FRAME_LOG": str(b.root / "no-folder" / "frames.log")},
                             "POKEVQ_FRAME_LOG"),
        "POKEVQ_S3_BUCKET_BLOCK": (train, {"POKEVQ_S3_BUCKET_BLOCK": "no-such-block"}, "POKEVQ_S3_BUCKET_BLOCK"),
        "POKEVQ_DIST_TIMEOUT": (train, {"POKEVQ_DIST_TIMEOUT": "0"}, "POKEVQ_DIST_TIMEOUT"),
        "POKEVQ_ZOMBIE_SECONDS": (["stack", "up", "--port", "1"], {"POKEVQ_ZOMBIE_SECONDS": "30"},
                                  "POKEVQ_ZOMBIE_SECONDS"),
        "tokenize POKEVQ_S3_MAX_ATTEMPTS": (tokenize, {"POKEVQ_S3_MAX_ATTEMPTS": "many"}, "POKEVQ_S3_MAX_ATTEMPTS"),
        # files pokevq reads from a bucket
        "garbage shard index": (["train", *s3[:2], b.garbage, *s3[3:], *TRAIN[:-1], "--no-fallback",
                                 "--cache-dir", str(b.root / "cache-garbage"),
                                 "--output-dir", str(b.root / "out")], {}, f"s3://{b.garbage}/{INDEX}"),
        "column-less shard index": (["train", *s3[:2], b.columnless, *s3[3:], *TRAIN,
                                     "--cache-dir", str(b.root / "cache-columnless"), "--output-dir",
                                     str(b.root / "out")], {}, f"s3://{b.columnless}/{INDEX}"),
        # S3 answering 5xx errors other than 503, through the proxy, retried and then given up on
        "500 on pack": (["pack", "--s3-bucket", b.fail500, "--s3-endpoint-url", b.proxy], quick, "HTTP 500"),
        "502 on train": (["train", "--use-s3", "--s3-bucket", b.fail502, "--s3-endpoint-url", b.proxy, *TRAIN],
                         quick, "HTTP 502"),
        "504 on upload": (["upload", str(b.synth), "--s3-bucket", b.fail504, "--s3-endpoint-url", b.proxy,
                           "--threads", "2"], quick, "HTTP 504"),
    }
    return cases


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, moto_endpoint, synth_frames, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "a-file").write_text("not a folder")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    names = {}
    for role in ("frames", "garbage", "columnless", "fail500", "fail502", "fail504"):
        names[role] = f"pokevq-bad-{role}-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=names[role])
        upload_tree(s3, names[role], synth_frames)
    s3.put_object(Bucket=names["garbage"], Key=INDEX, Body=b"PAR1" + os.urandom(300) + b"PAR1")
    columnless = io.BytesIO()
    pd.DataFrame({"note": ["no shard columns here"]}).to_parquet(columnless, index=False)
    s3.put_object(Bucket=names["columnless"], Key=INDEX, Body=columnless.getvalue())
    before = {bucket: _snapshot(s3, bucket) for bucket in names.values()}

    proxy = FaultProxy(moto_endpoint).start()
    for kind, role in (("internal", "fail500"), ("badgateway", "fail502"), ("timeout", "fail504")):
        proxy.add_fault(kind, rf"^\w+ /{names[role]}\b")
    layout = SimpleNamespace(root=root, endpoint=moto_endpoint, proxy=proxy.url, synth=synth_frames, **names)
    cases = _cases(layout)
    try:
        results = run_cli_cases({name: (args, [], env) for name, (args, env, _) in cases.items()},
                                {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, root)
    finally:
        proxy.stop()
    after = {bucket: _snapshot(s3, bucket) for bucket in names.values()}
    return SimpleNamespace(cases=cases, results=results, before=before, after=after, proxy=proxy)


CASE_NAMES = list(_cases(SimpleNamespace(root=__import__("pathlib").Path("/r"), endpoint="e", proxy="p", synth="s",
                                         frames="f", garbage="g", columnless="c", fail500="x", fail502="y",
                                         fail504="z")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_bad_value_is_one_error_line_naming_the_input(bad_inputs, case):
    rc, output = bad_inputs.results[case]
    names = bad_inputs.cases[case][2]
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert rc in (1, 2), output[-3000:]
    assert len(errors) == 1, output[-3000:]
    assert names in errors[0], errors[0]
    assert "Traceback" not in output, output[-3000:]


def test_nothing_is_written_to_any_bucket(bad_inputs):
    for bucket, keys in bad_inputs.before.items():
        assert bad_inputs.after[bucket] == keys, sorted(set(bad_inputs.after[bucket]) - set(keys))


def test_5xx_errors_are_retried_before_the_line(bad_inputs):
    """botocore retries a 500, 502 and 504 like a 503 (POKEVQ_S3_MAX_ATTEMPTS=2: each request twice)."""
    injected = [(kind, method) for kind, method, path in bad_inputs.proxy.injected]
    for kind in ("internal", "badgateway", "timeout"):
        assert sum(1 for k, _ in injected if k == kind) >= 2, injected
    for case in ("500 on pack", "502 on train", "504 on upload"):
        error = [line for line in bad_inputs.results[case][1].splitlines() if line.startswith("Error: ")][0]
        assert re.search(r"after [2-9] attempts: the S3 service is failing; try again later", error), error


def test_a_garbage_manifest_stops_the_retry_in_one_line_and_the_retry_keeps_its_nightly_name(
    prefect_harness, fault_proxy, bucket, s3_client, synth_frames, tmp_path, monkeypatch
):
    """A retried flow run reads back the manifest its first attempt saved: garbage there is one line naming it.
    The retry is a nightly's: it keeps the name its first attempt chose (no `-2` for a retry)."""
    from datetime import datetime

    from flows import pokevq
    from pokevq import TrainConfig
    from tests.helpers.flow_runs import retry_flow_run, task_states
    from tests.helpers.runs import TINY

    monkeypatch.setenv("POKEVQ_TASK_RETRY_DELAYS", "")
    upload_tree(s3_client, bucket, synth_frames)
    today = f"nightly-{datetime.now():%Y%m%d}"
    fault_proxy.add_fault("deny", rf"^GET /{bucket}/pokemon_frames/game")  # packing the day's frames fails
    config = TrainConfig(use_s3=True, s3_bucket=bucket, s3_endpoint_url=fault_proxy.url, nightly=True,
                         tokenize_after=False, num_epochs=1, batch_size=4, num_workers=0,
                         output_dir=str(tmp_path / "out"), local_cache_dir=str(tmp_path / "cache"), **TINY)
    state = pokevq(**config.to_dict(), return_state=True)
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    manifest = f"manifests/{today}/manifest.parquet"
    s3_client.put_object(Bucket=bucket, Key=manifest, Body=b"PAR1" + os.urandom(200) + b"PAR1")
    fault_proxy.clear_faults()
    before = _snapshot(s3_client, bucket)

    retried = retry_flow_run(flow_run_id)

    assert retried.is_failed(), retried
    message = str(retried.result(raise_on_failure=False))
    assert message.startswith(f"s3://{bucket}/{manifest} is not a readable manifest") and "\n" not in message
    states = task_states(flow_run_id)
    assert states["name_nightly"][-1] == "Cached" and states["index_manifest"][-1] == "Cached"
    assert _snapshot(s3_client, bucket) == before  # no nightly-...-2, nothing written (the lease is released)
