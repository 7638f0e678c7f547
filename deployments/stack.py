"""`pokevq stack up` / `stack down`: a Prefect server, work pool, blocks, deployment and worker on this machine.

Every process it starts is recorded by PID in `$PREFECT_HOME/pokevq-stack.json`, and
`stack down` stops exactly those. With no S3 settings in the environment it also starts
a local S3 endpoint seeded with synthetic frames, so `prefect deployment run pokevq/train`
works right after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pokevq import settings
from pokevq.errors import PokevqError

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
AUTOMATIONS_FILE = REPO_ROOT / "deployments" / "automations.yaml"
BUCKET_BLOCK = "pokevq-results"
CREDENTIALS_BLOCK = "pokevq-aws"
LOCAL_BUCKET = "pokevq"


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()


def state_file() -> Path:
    return prefect_home() / "pokevq-stack.json"


@dataclass
class StackState:
    api_url: str
    ui_url: str
    pool: str
    bucket: str
    endpoint_url: str | None
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        state_file().parent.mkdir(parents=True, exist_ok=True)
        state_file().write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> StackState | None:
        try:
            return cls(**json.loads(state_file().read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _executable(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def _spawn(args: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as output:
        return subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def _run(args: list[str], env: dict[str, str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise PokevqError(f"Stack set-up failed while {what}: {' | '.join(detail)}")
    return done.stdout


def _wait_http(url: str, what: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PokevqError(f"{what} exited at start (code {process.returncode}); see {log}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise PokevqError(f"{what} did not answer at {url} within {timeout:.0f}s; see {log}")


def api_request(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """A small JSON call to the Prefect REST API (used to wait for the worker)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def _s3_from_environment() -> dict[str, Any] | None:
    """The user's S3 settings, or None when the environment has none (then a local endpoint is used)."""
    bucket = os.environ.get("S3_BUCKET_NAME")
    if not bucket:
        if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_ENDPOINT_URL"):
            raise PokevqError(
                "S3_BUCKET_NAME is not set: export it with your AWS settings, or unset the AWS_* variables "
                "to use a local S3 endpoint with synthetic frames."
            )
        return None
    return {
        "bucket": bucket,
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "key_id": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "token": os.environ.get("AWS_SESSION_TOKEN"),
    }


def _start_local_s3(stack_dir: Path, pids: dict[str, int], logs: dict[str, str]) -> dict[str, Any]:
    """A local S3 endpoint, seeded with synthetic frames under pokemon_frames/."""
    from pokevq.config import StorageOptions
    from pokevq.data.upload_frames import upload_directory
    from pokevq.storage.local_server import LocalS3Server
    from pokevq.synth.generate import generate_dataset

    server = LocalS3Server(log_path=stack_dir / "s3.log").start()
    pids["s3"] = server.process.pid if server.process else 0
    logs["s3"] = str(stack_dir / "s3.log")
    os.environ.update(AWS_ACCESS_KEY_ID="pokevq-local", AWS_SECRET_ACCESS_KEY="pokevq-local-secret")
    settings = {
        "bucket": LOCAL_BUCKET,
        "region": "us-east-1",
        "endpoint_url": server.endpoint_url,
        "key_id": "pokevq-local",
        "secret": "pokevq-local-secret",
        "token": None,
    }
    from pokevq.storage import S3Storage

    S3Storage(LOCAL_BUCKET, "us-east-1", server.endpoint_url).client.create_bucket(Bucket=LOCAL_BUCKET)
    with tempfile.TemporaryDirectory(prefix="pokevq-stack-frames-") as frames:
        generate_dataset(frames, games=2, episodes=3, frames=40, seed=0)
        upload_directory(
            frames, StorageOptions(use_s3=True, s3_bucket=LOCAL_BUCKET, s3_endpoint_url=server.endpoint_url), threads=8
        )
    return settings


def _save_blocks(s3: dict[str, Any]) -> None:
    """AwsCredentials (secret as a SecretStr) and the S3Bucket that also stores task results."""
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    credentials = AwsCredentials(
        aws_access_key_id=s3["key_id"],
        aws_secret_access_key=s3["secret"],
        aws_session_token=s3["token"],
        region_name=s3["region"],
        aws_client_parameters=AwsClientParameters(endpoint_url=s3["endpoint_url"]),
    )
    credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    S3Bucket(bucket_name=s3["bucket"], credentials=credentials, bucket_folder="prefect-results").save(
        BUCKET_BLOCK, overwrite=True
    )


def _wait_for_worker(api_url: str, pool: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PokevqError(f"The Prefect worker exited at start (code {process.returncode}); see {log}")
        try:
            workers = api_request(api_url, "POST", f"/work_pools/{pool}/workers/filter", {})
        except (urllib.error.URLError, OSError):
            workers = []
        if any(w.get("status") == "ONLINE" for w in workers or []):
            return
        time.sleep(1)
    raise PokevqError(f"The Prefect worker did not come online within {timeout:.0f}s; see {log}")


def deploy_environment(pool: str, cron: str, timezone: str) -> dict[str, str]:
    """The values `deployments/prefect.yaml` reads at deploy time."""
    return {
        "POKEVQ_WORK_POOL": pool,
        "POKEVQ_SCHEDULE_CRON": cron,
        "POKEVQ_SCHEDULE_TZ": timezone,
        "POKEVQ_S3_BUCKET_BLOCK": BUCKET_BLOCK,
    }


def stack_up(port: int = 4200, pool: str = "pokevq", cron: str = "0 3 * * *", timezone: str = "UTC") -> StackState:
    """Start everything; on failure stop what was started and raise."""
    zombie_seconds = settings.zombie_seconds()  # a bad $POKEVQ_ZOMBIE_SECONDS is refused before anything starts
    existing = StackState.load()
    if existing and any(_alive(pid) for pid in existing.pids.values()):
        raise PokevqError(
            f"A pokevq stack is already up (UI {existing.ui_url}, PIDs {sorted(existing.pids.values())}): "
            "run `pokevq stack down` first."
        )
    stack_dir = prefect_home() / "pokevq-stack"
    api_url = f"http://127.0.0.1:{port}/api"
    ui_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_UI_URL=ui_url)
    os.environ["PREFECT_API_URL"] = api_url  # for the blocks saved from this process
    pids: dict[str, int] = {}
    logs: dict[str, str] = {}
    state = StackState(api_url=api_url, ui_url=ui_url, pool=pool, bucket="", endpoint_url=None, pids=pids, logs=logs)
    try:
        prefect = _executable("prefect")
        server_log = stack_dir / "server.log"
        server = _spawn(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            server_log,
            dict(env, PREFECT_UI_ENABLED="true"),
        )
        pids["server"] = server.pid
        logs["server"] = str(server_log)
        state.save()
        print(f"Prefect server starting at {ui_url} …", flush=True)
        _wait_http(f"{api_url}/health", "The Prefect server", 180, server, server_log)

        s3 = _s3_from_environment() or _start_local_s3(stack_dir, pids, logs)
        state.bucket, state.endpoint_url = s3["bucket"], s3["endpoint_url"]
        state.save()
        where = s3["endpoint_url"] or f"AWS ({s3['region']})"
        print(f"S3 bucket s3://{s3['bucket']} at {where}", flush=True)

        _run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env, "creating the work pool")
        _save_blocks(s3)
        deploy_env = dict(env, **deploy_environment(pool, cron, timezone))
        _run(
            [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
            deploy_env,
            "deploying deployments/prefect.yaml",
            cwd=REPO_ROOT,
        )
        _create_automation(prefect, env, zombie_seconds)
        worker_log = stack_dir / "worker.log"
        worker = _spawn([prefect, "worker", "start", "--pool", pool, "--type", "process"], worker_log, env, REPO_ROOT)
        pids["worker"] = worker.pid
        logs["worker"] = str(worker_log)
        state.save()
        _wait_for_worker(api_url, pool, worker, worker_log)
    except BaseException:
        stack_down(quiet=True)
        raise
    return state


def _create_automation(prefect: str, env: dict[str, str], zombie_seconds: int) -> None:
    """The zombie-run automation, replaced rather than duplicated on every `stack up`."""
    subprocess.run(
        [prefect, "--no-prompt", "automation", "delete", "pokevq-crash-zombie-flow-runs"],
        env=env, capture_output=True, timeout=60,
    )
    with tempfile.TemporaryDirectory(prefix="pokevq-automation-") as folder:
        path = Path(folder) / "automations.yaml"
        path.write_text(zombie_automation(zombie_seconds))
        _run([prefect, "automation", "create", "--from-file", str(path)], env, "creating the automation")


def zombie_automation(seconds: int) -> str:
    """deployments/automations.yaml with its window set to `seconds` ($POKEVQ_ZOMBIE_SECONDS)."""
    import yaml

    document = yaml.safe_load(AUTOMATIONS_FILE.read_text())
    for automation in document["automations"]:
        automation["trigger"]["within"] = seconds
        for action in automation["actions"]:
            action["message"] = action["message"].replace("90 seconds", f"{seconds} seconds")
        automation["description"] = automation["description"].replace("90 seconds", f"{seconds} seconds")
    return yaml.safe_dump(document, sort_keys=False)


def _stop(pid: int, timeout: float = 15) -> bool:
    """Stop a process group started by `stack up`; True when something was running."""
    if not _alive(pid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0 if _alive(pid) else pid
            if finished or not _alive(pid):
                return True
            time.sleep(0.2)
    return True


def stack_down(quiet: bool = False) -> list[str]:
    """Stop exactly the processes `stack up` recorded; safe to run twice."""
    state = StackState.load()
    if state is None:
        if not quiet:
            print(f"No pokevq stack is running (nothing recorded in {state_file()}).")
        return []
    stopped = []
    for name in ("worker", "server", "s3"):
        pid = state.pids.get(name)
        if pid and _stop(pid):
            stopped.append(f"{name} (PID {pid})")
    state_file().unlink(missing_ok=True)
    if not quiet:
        print("Stopped: " + (", ".join(stopped) if stopped else "nothing was still running") + ".")
    return stopped
