"""Shared fixtures: a real S3 API over HTTP (moto's server), real Prefect, small synthetic frames.

Nothing here mocks boto3: every S3 call in the tests crosses a socket to moto's server.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

# Prefect reads its settings at import: isolate it before anything imports it.
_PREFECT_HOME = Path(os.environ.get("POKEVQ_TEST_PREFECT_HOME", "/tmp")) / f"pokevq-test-prefect-{os.getpid()}"
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pokevq")
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.pop("PREFECT_API_URL", None)
# Fake keys by default; tests of missing credentials remove them explicitly.
os.environ["AWS_ACCESS_KEY_ID"] = "testing-key-id-AKIA"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing-secret-key"
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_S3", None)
os.environ.pop("S3_BUCKET_NAME", None)
os.environ["AWS_REGION"] = "us-east-1"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/pokevq-tests/credentials"
os.environ["AWS_CONFIG_FILE"] = "/nonexistent/pokevq-tests/config"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Several test processes (pytest-xdist workers, their subprocesses) share a few cores: one intra-op thread
# each, so the tiny models do not thrash (10x slower seen on 2 shared cores) or spin idle threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto's S3 server on 127.0.0.1 with an OS-chosen port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket per test."""
    import boto3

    name = f"pokevq-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client(moto_endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


def _synthetic_frames(tmp_path_factory, name: str, **sizes) -> Path:
    """Synthetic Game Boy frames in a new temporary folder, without the generator's index file."""
    from pokevq.synth.generate import generate_dataset

    out = tmp_path_factory.mktemp(name)
    generate_dataset(out, **sizes)
    (out / "synth_index.json").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="session")
def synth_frames(tmp_path_factory) -> Path:
    """2 games × 2 episodes × 6 frames of synthetic Game Boy frames, made once."""
    return _synthetic_frames(tmp_path_factory, "frames", games=2, episodes=2, frames=6, seed=0)


@pytest.fixture(scope="session")
def episode_frames(tmp_path_factory) -> Path:
    """2 games × 3 episodes × 16 frames (96 frames of a few KB): enough for several shards and batches."""
    return _synthetic_frames(tmp_path_factory, "episode-frames", games=2, episodes=3, frames=16, seed=1)


@pytest.fixture
def fault_proxy(moto_endpoint: str):
    """The fault-injecting proxy (tests/helpers/s3_proxy.py) in front of moto, for one test."""
    from tests.helpers.s3_proxy import FaultProxy

    proxy = FaultProxy(moto_endpoint).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def one_thread_seeded():
    """Tiny tensors on one thread: results do not depend on the core count, and a busy machine
    does not make intra-op threads thrash (10x slower seen on 2 shared cores). Seed 0."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prefect_harness():
    """A real (temporary) Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


# The longest files first (measured wall time on 2 cores), so the test processes, which take whole files
# (scripts/test.sh: pytest-xdist --dist loadfile), finish together instead of one running a long file alone.
_LONGEST_FIRST = (
    "test_deployment.py", "test_faults.py", "test_distributed.py", "test_cli.py", "test_benchmarks_smoke.py",
    "test_nightly.py", "test_streaming.py", "test_shards.py", "test_security.py", "test_midepoch_resume.py",
    "test_tokenizer.py", "test_lease_run.py", "test_hostile_inputs.py", "test_gpu_check.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order and stay together
