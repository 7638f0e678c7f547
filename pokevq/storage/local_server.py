"""A local S3 endpoint (moto's server) for the demo, the stack and tests that need another process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pokevq.errors import PokevqError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM a process started with `start_new_session=True` and its children, then SIGKILL if needed."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def _moto_command(host: str, port: int) -> list[str]:
    beside = Path(sys.executable).with_name("moto_server")  # the one installed with this pokevq
    exe = str(beside) if beside.exists() else shutil.which("moto_server")
    if not exe:
        raise PokevqError(
            "The local S3 endpoint needs moto's server: pip install 'moto[server]' (the Quickstart installs it)."
        )
    return [exe, "-H", host, "-p", str(port)]


class LocalS3Server:
    """`moto_server` on 127.0.0.1 as a subprocess, stopped by PID."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalS3Server:
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            _moto_command(self.host, self.port),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PokevqError(f"The local S3 endpoint exited at start (code {self.process.returncode}).")
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise PokevqError(f"The local S3 endpoint did not start within {timeout:.0f}s on {self.endpoint_url}.")

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
