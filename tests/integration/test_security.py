"""Security: encryption at rest, the bucket owner check, least privilege, wrong keys, and no leaked secret.

S3 is always moto's server over HTTP. Tests that need IAM authorisation run their own
`moto_server` subprocess (switching auth on is global to a moto process); the others use
the session's server, with `tests/s3_proxy.py` in front where the requests themselves matter.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
import torch

from flows import pokevq, train
from pokevq import cli
from pokevq.config import TrainConfig
from pokevq.errors import AccessDeniedError, ConfigError, InvalidCredentialsError
from pokevq.run.validate import validate_setup
from pokevq.storage.local_server import LocalS3Server
from tests.helpers.frames import upload_tree
from tests.helpers.runs import list_keys, s3_train_config
from tests.helpers.s3_proxy import FaultProxy

pytestmark = pytest.mark.security

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "sec"
# What one epoch of the flow writes (the S3 layout in docs/storage.md).
LAYOUT_KEYS = (
    f"checkpoints/{EXPERIMENT}/checkpoint_epoch_1.pt",
    f"checkpoints/{EXPERIMENT}/checkpoint_latest.pt",
    f"checkpoints/{EXPERIMENT}/checkpoint_best.pt",
    f"logs/{EXPERIMENT}/training_latest.log",
    f"manifests/{EXPERIMENT}/manifest.parquet",
    f"reports/{EXPERIMENT}/report.md",
    f"reports/{EXPERIMENT}/reconstructions.png",
)
OWNER = "123456789012"  # moto's default account, which owns every bucket it creates


def _config(tmp_path: Path, bucket: str, endpoint: str, **overrides) -> TrainConfig:
    return s3_train_config(tmp_path, bucket, endpoint, **{"experiment_name": EXPERIMENT, "num_epochs": 1, **overrides})


def _written_keys(client, bucket: str) -> list[str]:
    """Every object the run wrote: everything but the frames the test put there."""
    keys = [k for k in list_keys(client, bucket) if not k.startswith("pokemon_frames/")]
    for expected in LAYOUT_KEYS:
        assert expected in keys, f"{expected} missing from the bucket: {keys}"
    assert any(k.startswith(f"tensorboard/{EXPERIMENT}/events.out.tfevents") for k in keys), keys
    return keys


@pytest.fixture
def frames_bucket(bucket, s3_client, synth_frames) -> str:
    upload_tree(s3_client, bucket, synth_frames)
    return bucket


# ------------------------------------------------------------------ invalid options


@pytest.mark.parametrize(
    "values, flag",
    [
        (dict(s3_sse="aes256"), "--s3-sse"),
        (dict(s3_sse="kms"), "--s3-sse"),
        (dict(s3_sse=""), "--s3-sse"),
        (dict(s3_kms_key_id="alias/pokevq"), "--s3-kms-key-id"),  # without --s3-sse aws:kms
        (dict(s3_sse="AES256", s3_kms_key_id="alias/pokevq"), "--s3-kms-key-id"),
        (dict(s3_sse="aws:kms", s3_kms_key_id=" "), "--s3-kms-key-id"),
        (dict(expected_bucket_owner="12345"), "--expected-bucket-owner"),
        (dict(expected_bucket_owner="12345678901a"), "--expected-bucket-owner"),
        (dict(expected_bucket_owner="1234567890123"), "--expected-bucket-owner"),
        (dict(expected_bucket_owner=123456789012), "--expected-bucket-owner"),
    ],
)
def test_invalid_security_options_name_their_flag(values, flag):
    with pytest.raises(ConfigError, match=re.escape(f"({flag})")):
        TrainConfig(**values)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--s3-sse", "aes256"], "--s3-sse"),
        (["--s3-kms-key-id", "alias/pokevq"], "--s3-kms-key-id"),
        (["--expected-bucket-owner", "owner"], "--expected-bucket-owner"),
    ],
)
def test_cli_refuses_invalid_security_options_in_one_line(args, flag, capsys):
    assert cli.main(["train", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and flag in err
    assert "Traceback" not in err


def test_cli_flags_set_the_security_options(capsys):
    args = cli.build_parser().parse_args(
        ["train", "--s3-sse", "aws:kms", "--s3-kms-key-id", "alias/pokevq", "--expected-bucket-owner", OWNER]
    )
    config = cli.config_from_args(args)
    assert (config.s3_sse, config.s3_kms_key_id, config.expected_bucket_owner) == ("aws:kms", "alias/pokevq", OWNER)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--s3-sse", "--s3-kms-key-id", "--expected-bucket-owner"):
        assert flag in help_text
    assert "AES256 or aws:kms" in help_text


# ------------------------------------------------------------------ encryption at rest


def test_sse_aes256_encrypts_every_object_the_run_writes(prefect_harness, tmp_path, moto_endpoint, frames_bucket,
                                                          s3_client):
    train(_config(tmp_path, frames_bucket, moto_endpoint, s3_sse="AES256"))

    keys = _written_keys(s3_client, frames_bucket)
    unencrypted = [
        key for key in keys
        if s3_client.head_object(Bucket=frames_bucket, Key=key).get("ServerSideEncryption") != "AES256"
    ]
    assert unencrypted == [], "objects written without SSE-S3"
    # checkpoint_latest/best are server-side copies: they keep the encryption too (checked above).


def test_sse_kms_with_expected_owner_on_every_request(prefect_harness, tmp_path, moto_endpoint, frames_bucket,
                                                      s3_client):
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")
    key_id = kms.create_key(Description="pokevq test key")["KeyMetadata"]["KeyId"]
    proxy = FaultProxy(moto_endpoint).start()
    proxy.bucket_owner = OWNER  # answers 403 to any request claiming another owner, as AWS does
    try:
        train(
            _config(
                tmp_path, frames_bucket, proxy.url, s3_sse="aws:kms", s3_kms_key_id=key_id, expected_bucket_owner=OWNER
            )
        )
    finally:
        proxy.stop()

    for key in _written_keys(s3_client, frames_bucket):
        head = s3_client.head_object(Bucket=frames_bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") == key_id, key

    assert proxy.seen, "the run never went through the proxy"
    assert {method for method, _, _ in proxy.seen} >= {"GET", "HEAD", "PUT", "DELETE"}
    missing = [(m, p) for m, p, headers in proxy.seen if headers.get("x-amz-expected-bucket-owner") != OWNER]
    assert missing == [], "requests sent without x-amz-expected-bucket-owner"
    copies = [headers for _, _, headers in proxy.seen if "x-amz-copy-source" in headers]
    assert copies, "checkpoint_latest is published with a server-side copy"
    assert all(h.get("x-amz-source-expected-bucket-owner") == OWNER for h in copies)
    assert proxy.denied == []


def test_wrong_expected_owner_is_refused_at_validation(tmp_path, moto_endpoint, frames_bucket, s3_client):
    # moto itself ignores x-amz-expected-bucket-owner; the proxy answers a mismatch with AWS's 403.
    proxy = FaultProxy(moto_endpoint).start()
    proxy.bucket_owner = OWNER
    try:
        config = _config(tmp_path, frames_bucket, proxy.url, expected_bucket_owner="210987654321")
        with pytest.raises(AccessDeniedError) as failure:
            validate_setup(config.storage, config.run.experiment_name)
    finally:
        proxy.stop()
    message = str(failure.value)
    assert message.startswith(f"Access denied to S3 bucket {frames_bucket}: s3:ListBucket on pokemon_frames/")
    assert "account 210987654321 (--expected-bucket-owner) owns the bucket" in message  # says what to check
    assert all(headers.get("x-amz-expected-bucket-owner") == "210987654321" for _, _, headers in proxy.seen)
    assert not any(".pokevq-write-probe" in k for k in list_keys(s3_client, frames_bucket)), "nothing was written"


def test_every_command_that_reads_or_writes_a_bucket_takes_encryption_and_the_owner_check(
    tmp_path, moto_endpoint, frames_bucket, s3_client, capsys
):
    proxy = FaultProxy(moto_endpoint).start()
    proxy.bucket_owner = OWNER
    endpoint = ["--s3-endpoint-url", proxy.url]
    try:
        # pack writes shards and their index encrypted, every request naming the owner.
        assert cli.main(["pack", "--s3-bucket", frames_bucket, *endpoint, "--s3-sse", "AES256",
                         "--expected-bucket-owner", OWNER, "--shard-size", "64KB"]) == 0, capsys.readouterr().err
        written = [k for k in list_keys(s3_client, frames_bucket) if k.startswith("pokemon_frames/_shards/")]
        assert written and all(s3_client.head_object(Bucket=frames_bucket, Key=k).get("ServerSideEncryption")
                               == "AES256" for k in written)
        assert proxy.seen and all(h.get("x-amz-expected-bucket-owner") == OWNER for _, _, h in proxy.seen)
        capsys.readouterr()

        # Another account's id: each command stops at its first request with one line, as train does.
        checkpoint = f"s3://{frames_bucket}/checkpoints/sec/checkpoint_best.pt"
        wrong = ["--expected-bucket-owner", "210987654321"]
        for args in (["pack", "--s3-bucket", frames_bucket, *endpoint, *wrong],
                     ["export", checkpoint, "--out", str(tmp_path / "export"), *endpoint, *wrong],
                     ["decode", f"s3://{frames_bucket}/tokens/sec/abc/game1/episode1.tokens.npz", "--out",
                      str(tmp_path / "decoded"), *endpoint, *wrong]):
            before = len(proxy.seen)
            assert cli.main(args) == 1, args
            err = capsys.readouterr().err
            assert err.startswith(f"Error: Access denied to S3 bucket {frames_bucket}") and err.count("\n") == 1, err
            assert all(h.get("x-amz-expected-bucket-owner") == "210987654321" for _, _, h in proxy.seen[before:])
        # A malformed id is refused before any request, naming the flag.
        before = len(proxy.seen)
        assert cli.main(["export", checkpoint, "--out", str(tmp_path / "x"), *endpoint,
                         "--expected-bucket-owner", "12345"]) == 1
        assert "--expected-bucket-owner" in capsys.readouterr().err and len(proxy.seen) == before
    finally:
        proxy.stop()
    for command in ("tokenize", "upload", "pack"):  # the writers also take encryption, with train's checks
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert all(flag in help_text for flag in ("--s3-sse", "--s3-kms-key-id", "--expected-bucket-owner"))


def test_tokenize_options_carry_encryption_and_the_owner_to_its_storage():
    from pokevq.tokenizer.job import TokenizeConfig

    args = cli.build_parser().parse_args(["tokenize", "--checkpoint", "c.pt", "--use-s3", "--s3-bucket", "b",
                                          "--s3-sse", "aws:kms", "--s3-kms-key-id", "alias/k",
                                          "--expected-bucket-owner", OWNER])
    config = TokenizeConfig.from_dict({k: v for k, v in vars(args).items() if k != "command"}).storage
    assert (config.s3_sse, config.s3_kms_key_id, config.expected_bucket_owner) == ("aws:kms", "alias/k", OWNER)
    with pytest.raises(ConfigError, match=r"s3_kms_key_id \(--s3-kms-key-id\) is only used with --s3-sse aws:kms"):
        TokenizeConfig(checkpoint="c.pt", use_s3=True, s3_bucket="b", s3_kms_key_id="alias/k")


# ------------------------------------------------------------------ IAM: least privilege, wrong keys


def _readme_policy(bucket: str, drop: str | None = None) -> str:
    """The documented "Minimal IAM policy" (docs/storage.md, linked from the README), for `bucket`, optionally
    without one action."""
    section = (ROOT / "docs" / "storage.md").read_text(encoding="utf-8").split("## Minimal IAM policy", 1)[1]
    policy = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1).replace("your-bucket-name", bucket))
    for statement in policy["Statement"]:
        statement["Action"] = [action for action in statement["Action"] if action != drop]
    return json.dumps(policy)


class AuthS3:
    """A moto server of its own with IAM authorisation on, a bucket of frames, and two users."""

    def __init__(self, server: LocalS3Server, bucket: str, users: dict[str, dict[str, str]]) -> None:
        self.server, self.bucket, self.users = server, bucket, users

    @property
    def endpoint(self) -> str:
        return self.server.endpoint_url

    def client(self, user: str = "minimal"):
        keys = self.users[user]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys["id"],
            aws_secret_access_key=keys["secret"],
        )

    def use(self, monkeypatch, user: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", self.users[user]["id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", self.users[user]["secret"])


@pytest.fixture(scope="module")
def auth_s3(synth_frames, tmp_path_factory):
    server = LocalS3Server(log_path=tmp_path_factory.mktemp("moto-auth") / "moto.log").start()
    try:
        admin = dict(endpoint_url=server.endpoint_url, region_name="us-east-1",
                     aws_access_key_id="admin-setup", aws_secret_access_key="admin-setup")
        name = f"pokevq-auth-{uuid.uuid4().hex[:10]}"
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket=name)
        upload_tree(s3, name, synth_frames)
        iam = boto3.client("iam", **admin)
        users = {}
        for user, policy in (("minimal", _readme_policy(name)), ("no-put", _readme_policy(name, drop="s3:PutObject"))):
            iam.create_user(UserName=f"pokevq-{user}")
            iam.put_user_policy(UserName=f"pokevq-{user}", PolicyName="pokevq", PolicyDocument=policy)
            key = iam.create_access_key(UserName=f"pokevq-{user}")["AccessKey"]
            users[user] = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        # From now on every request is authenticated and authorised (0 unauthenticated actions left).
        request = urllib.request.Request(
            f"{server.endpoint_url}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["status"] == "ok"
        yield AuthS3(server, name, users)
    finally:
        server.stop()


def test_readme_policy_is_enough_for_a_whole_run(prefect_harness, auth_s3, tmp_path, monkeypatch):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):  # the policy is enforced: nothing beyond it works
        auth_s3.client().create_bucket(Bucket=f"{auth_s3.bucket}-other")
    auth_s3.use(monkeypatch, "minimal")
    summary = train(_config(tmp_path, auth_s3.bucket, auth_s3.endpoint))

    assert summary["fallback"] is False
    assert summary["epochs_trained"] == 1
    keys = _written_keys(auth_s3.client(), auth_s3.bucket)
    assert not any(".pokevq-write-probe" in k for k in keys)


def test_missing_put_object_fails_at_validation(prefect_harness, auth_s3, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    auth_s3.use(monkeypatch, "no-put")
    config = _config(tmp_path, auth_s3.bucket, auth_s3.endpoint, experiment_name="noput")
    state = pokevq(**config.to_dict(), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, AccessDeniedError)
    assert str(error).startswith(f"Access denied to S3 bucket {auth_s3.bucket}: s3:PutObject on checkpoints/")
    assert list_keys(auth_s3.client(), auth_s3.bucket, "checkpoints/noput/") == []
    assert list_keys(auth_s3.client(), auth_s3.bucket, "manifests/noput/") == []
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert [run.name for run in task_runs] == ["validate"], "nothing may run after a failed validation"


@pytest.mark.parametrize(
    "case, expected_code",
    [("wrong secret", "SignatureDoesNotMatch"), ("unknown key id", "InvalidAccessKeyId")],
)
def test_wrong_keys_fail_validation_fast_without_showing_them(case, expected_code, auth_s3, tmp_path, monkeypatch):
    if case == "wrong secret":
        key_id, secret = auth_s3.users["minimal"]["id"], "wrong/secret+value0123456789abcdefghijklm"
    else:
        key_id, secret = "AKIAPOKEVQUNKNOWN9Z7Q", auth_s3.users["minimal"]["secret"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    with pytest.raises(InvalidCredentialsError) as failure:
        validate_setup(_config(tmp_path, auth_s3.bucket, auth_s3.endpoint).storage, "iam")

    message = str(failure.value)
    assert message.startswith(f"AWS credentials are invalid (access key …{key_id[-4:]})")
    assert expected_code in message
    assert key_id not in message and secret not in message


# ------------------------------------------------------------------ no secret leaves memory

LEAK_KEY_ID = "AKIAPOKEVQLEAKTEST01"
LEAK_SECRET = "pokevq/leak+test/secret/value0123456789"


@pytest.fixture
def restore_log_levels():
    names = ("boto3", "botocore", "pokevq")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _assert_clean(where: str, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    assert LEAK_SECRET.encode() not in data, f"the secret access key leaked into {where}"
    assert LEAK_KEY_ID.encode() not in data, f"the full access key id leaked into {where}"


def _object_text(key: str, body: bytes) -> bytes:
    """The object as bytes to search, decoded where the format compresses or pickles its strings."""
    if key.endswith(".parquet"):
        import pandas as pd

        return body + pd.read_parquet(io.BytesIO(body)).to_csv().encode()
    if key.endswith(".pt"):
        state = torch.load(io.BytesIO(body), weights_only=True)
        return body + repr({k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}).encode()
    return body


def _result_text(path: Path) -> bytes:
    """A persisted task result as stored (JSON around base64 of a pickle), decoded and unpickled."""
    from prefect.results import ResultRecord

    raw = path.read_bytes()
    record = ResultRecord.deserialize(raw)
    pickled = base64.b64decode(json.loads(raw)["result"])
    return raw + pickled + repr(record.result).encode()


def test_no_secret_in_logs_outputs_parameters_or_results_even_with_debug(
    prefect_harness, tmp_path, moto_endpoint, frames_bucket, s3_client, monkeypatch, caplog, capfd, restore_log_levels
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", LEAK_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LEAK_SECRET)
    config = _config(tmp_path, frames_bucket, moto_endpoint, debug=True)  # --debug: botocore logs at DEBUG
    state = pokevq(**config.to_dict(), return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id

    # Console: the debug path really ran (botocore printed its signed requests), and redacted them.
    console = capfd.readouterr()
    botocore_lines = [r.getMessage() for r in caplog.records if r.name.startswith("botocore")]
    assert any("Authorization" in line and "Credential=" in line for line in botocore_lines), "no signed request logged"
    _assert_clean("the console (stdout)", console.out)
    _assert_clean("the console (stderr)", console.err)
    _assert_clean("the captured log records", "\n".join(r.getMessage() for r in caplog.records))
    assert any("Credential=…ST01/" in line for line in botocore_lines)  # the last four still tell keys apart

    # The local training.log and every object of the run in the bucket.
    _assert_clean("training.log", (tmp_path / "outputs" / "runs" / EXPERIMENT / "training.log").read_bytes())
    for key in _written_keys(s3_client, frames_bucket):
        body = s3_client.get_object(Bucket=frames_bucket, Key=key)["Body"].read()
        _assert_clean(f"s3://{frames_bucket}/{key}", _object_text(key, body))

    # The orchestrator: the run's parameters and its logs in the Prefect API, and persisted task results.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    assert flow_run.parameters["experiment_name"] == EXPERIMENT
    _assert_clean("the flow run's parameters", json.dumps(flow_run.parameters, default=str))
    assert logs, "the run logged nothing to the API"
    _assert_clean("the flow run's logs in the API", "\n".join(log.message for log in logs))
    stored = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()
    results = {path: _result_text(path) for path in stored.rglob(f"pokevq-{flow_run_id}-*")}
    assert {path.name.rsplit("-", 2)[-2] for path in results} >= {"validate", "train_epoch", "upload_checkpoint"}
    plan = next(text for path, text in results.items() if path.name.endswith("-validate-"))
    assert frames_bucket.encode() in plan, "the validate task's result (the storage plan) was not decoded"
    for path, text in results.items():
        _assert_clean(f"the persisted task result {path.name}", text)


def test_cli_debug_console_shows_signed_requests_without_the_keys(prefect_harness, tmp_path, moto_endpoint, bucket):
    """`pokevq train --debug` prints botocore's DEBUG lines (request headers) on the console."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the harness' API, not a new temporary server
        "AWS_ACCESS_KEY_ID": LEAK_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": LEAK_SECRET,
    }
    args = ["train", "--debug", "--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", moto_endpoint,
            "--no-fallback", "--experiment-name", EXPERIMENT, "--output-dir", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "pokevq", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    console = done.stdout + done.stderr
    assert done.returncode != 0 and "No frames found" in console  # the bucket is empty: validation stops
    assert "Authorization" in console and "Credential=" in console, "no signed request was shown"
    _assert_clean("the --debug console", console)
    assert "Credential=…ST01/" in console


def test_debug_logs_of_boto_redact_key_ids_tokens_and_secrets(monkeypatch, caplog, restore_log_levels):
    from pokevq.run.logs import enable_debug

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", LEAK_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LEAK_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEPOKEVQsessiontoken")
    enable_debug()
    caplog.set_level(logging.DEBUG)
    other_key = "ASIAOTHERPROFILEKEY9"  # from a profile, not the environment
    logging.getLogger("botocore.endpoint").debug(
        "Sending http request: headers={'X-Amz-Security-Token': b'%s', 'Authorization': b'AWS4-HMAC-SHA256 "
        "Credential=%s/20260101/us-east-1/s3/aws4_request, Signature=abc'}",
        "FwoGZXIvYXdzEPOKEVQsessiontoken",
        LEAK_KEY_ID,
    )
    logging.getLogger("botocore.parsers").debug(
        "Response body: b'<Error><Code>InvalidAccessKeyId</Code><AWSAccessKeyId>%s</AWSAccessKeyId></Error>'", other_key
    )
    logging.getLogger("botocore.auth").debug("CanonicalRequest: x-amz-security-token:FwoGZXIvYXdzEPOKEVQsessiontoken")
    logging.getLogger("botocore.credentials").debug("secret in a message: %s", LEAK_SECRET)

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "Credential=…ST01/" in text  # the last four characters tell keys apart
    assert "<AWSAccessKeyId>…KEY9</AWSAccessKeyId>" in text
    _assert_clean("botocore's debug records", text)
    assert other_key not in text
    assert "FwoGZXIvYXdzEPOKEVQsessiontoken" not in text
    assert "x-amz-security-token:****" in text
