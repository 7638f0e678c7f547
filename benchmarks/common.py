"""Shared pieces of the benchmark suite: the S3 stack, synthetic frames, timing, result rows."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# Fake credentials for moto; never real ones (the suite only talks to 127.0.0.1).
BENCH_ENV = {
    "AWS_ACCESS_KEY_ID": "bench-key-id",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pokevq-bench/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/pokevq-bench/config",
}
os.environ.update(BENCH_ENV)
for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(name, None)

BUCKET = "pokevq-bench"
PREFIX = "pokemon_frames/"


@dataclass
class Row:
    """One measured figure: `value` of `name`, and its ratio to `baseline` measured in the same run."""

    section: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None  # >1 means better than the baseline
    target: str = ""
    met: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio_row(section: str, name: str, value: float, unit: str, baseline: str, baseline_value: float, *,
              target: float | None = None, higher_is_better: bool = True, note: str = "",
              target_text: str = "") -> Row:
    """A row whose ratio is value/baseline (or baseline/value when lower is better)."""
    if higher_is_better:
        ratio = value / baseline_value if baseline_value > 0 else math.inf
    else:
        ratio = baseline_value / value if value > 0 else math.inf
    met = None if target is None else ratio >= target
    text = target_text or (f"≥{target:g}×" if target is not None else "")
    return Row(section, name, value, unit, baseline, baseline_value, ratio, text, met, note)


@dataclass
class Stopwatch:
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


# ------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_at_start": load,
    }


# ------------------------------------------------------------------------------- S3 stack


class S3Stack:
    """moto's S3 server (`moto_server`, a subprocess) behind the latency proxy (another subprocess).

    `direct` talks to moto itself (set-up only: uploading data is not what is measured);
    `storage()` and `client()` talk through the proxy, as a training node talks to S3.
    """

    def __init__(self, latency_ms: float = 20.0, bulk: bool = False) -> None:
        from benchmarks.latency_proxy import LatencyProxy

        if bulk:
            from benchmarks.moto_bulk import BulkMotoServer

            self.server: Any = BulkMotoServer()
        else:
            from pokevq.storage.local_server import LocalS3Server

            self.server = LocalS3Server()
        self.latency_ms = latency_ms
        self.proxy: Any = None
        self._proxy_cls = LatencyProxy

    def __enter__(self) -> S3Stack:
        self.server.start()
        self.proxy = self._proxy_cls(self.server.endpoint_url, self.latency_ms).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.server.stop()

    @property
    def url(self) -> str:
        return self.proxy.url

    def direct(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.server.endpoint_url, region_name="us-east-1",
                            config=Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5}))

    def client(self, pool: int = 10) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            config=Config(max_pool_connections=pool, s3={"addressing_style": "path"}))

    def storage(self) -> Any:
        from pokevq.storage import S3Storage

        return S3Storage(BUCKET, "us-east-1", endpoint_url=self.url)

    def create_bucket(self) -> None:
        self.direct().create_bucket(Bucket=BUCKET)

    def requests(self) -> int:
        return int(self.proxy.stats()["requests"])

    def reset(self) -> None:
        self.proxy.reset()


def make_frames(out: Path, frames: int, *, games: int = 2, episodes: int = 4) -> list[Path]:
    """About `frames` synthetic Game Boy frames (PNG, 160x144) in the guide's layout."""
    from pokevq.synth.generate import generate_dataset

    per_episode = max(1, math.ceil(frames / (games * episodes)))
    generate_dataset(out, games=games, episodes=episodes, frames=per_episode, seed=0)
    (out / "synth_index.json").unlink(missing_ok=True)
    return sorted(p for p in out.rglob("*.png"))


def upload_frames(stack: S3Stack, root: Path, files: list[Path], prefix: str = PREFIX) -> list[str]:
    """Put the frames into the bucket directly (not through the proxy: set-up is not measured)."""
    client = stack.direct()
    keys = [prefix + f.relative_to(root).as_posix() for f in files]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda kf: client.put_object(Bucket=BUCKET, Key=kf[0], Body=kf[1].read_bytes()),
                      zip(keys, files)))
    return keys


def module_command(module: str, *args: str) -> list[str]:
    """`python -m benchmarks.<module> ARGS`, for a helper run as a subprocess (from the repository root)."""
    return [sys.executable, "-m", f"benchmarks.{module}", *args]


def run_json(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run a helper that prints one JSON object on its last line of stdout (in the repository root)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, cwd=str(ROOT))
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-12:]
        return {"error": f"exit {result.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])
