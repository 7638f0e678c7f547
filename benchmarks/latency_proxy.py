"""An HTTP proxy in front of moto's S3 server that adds S3-like first-byte latency and counts requests.

Every proxied request waits `latency_ms` (default 20 ms, a typical S3 time to first byte for
small objects) before it is forwarded, so a client that fetches one object at a time pays it
on every request and a concurrent client pays it once per wave: concurrency matters as it
does against S3. The proxy itself is asyncio in its own process (so its work never competes
for the benchmark's GIL) and keeps one upstream keep-alive connection per client connection.

    python -m benchmarks.latency_proxy --upstream http://127.0.0.1:PORT [--latency-ms 20] [--port 0]

prints `PORT <n>` once it listens. Control endpoints (never delayed, never counted):

    GET  /__proxy__/stats   -> {"requests": n, "by_method": {...}, "range_gets": n, "bytes_out": n}
    POST /__proxy__/reset   -> zero the counters

`LatencyProxy` starts and stops it from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pokevq.storage.local_server import stop_process_group

_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect"}
_MAX_HEAD = 64 * 1024


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_method: dict[str, int] = {}
        self.range_gets = 0
        self.bytes_out = 0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "by_method": dict(self.by_method), "range_gets": self.range_gets,
                "bytes_out": self.bytes_out}


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        return None
    return head


def _parse_headers(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Decode a chunked body (request side: forwarded upstream with a Content-Length)."""
    parts = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Copy a chunked response body verbatim."""
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    return total
        data = await reader.readexactly(size + 2)
        writer.write(data)
        total += size


class Proxy:
    def __init__(self, upstream: str, latency_s: float) -> None:
        parsed = urlparse(upstream)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.latency_s = latency_s
        self.stats = Stats()

    async def _control(self, method: bytes, path: bytes, writer: asyncio.StreamWriter) -> None:
        if method == b"POST" and path.startswith(b"/__proxy__/reset"):
            self.stats.reset()
        body = json.dumps(self.stats.as_dict()).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                request_line, headers = _parse_headers(head)
                method, path, _ = request_line.split(b" ", 2)
                if path.startswith(b"/__proxy__/"):
                    await self._control(method, path, writer)
                    continue
                expect = _get(headers, b"expect")
                if expect and expect.lower() == b"100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                encoding = (_get(headers, b"transfer-encoding") or b"").lower()
                if b"chunked" in encoding:
                    body = await _read_chunked(reader)
                else:
                    length = int(_get(headers, b"content-length") or b"0")
                    body = await reader.readexactly(length) if length else b""
                self.stats.requests += 1
                name = method.decode()
                self.stats.by_method[name] = self.stats.by_method.get(name, 0) + 1
                if method == b"GET" and _get(headers, b"range") is not None:
                    self.stats.range_gets += 1
                if self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                out = [request_line]
                for key, value in headers:
                    low = key.lower()
                    if low in _HOP_BY_HOP or low in (b"transfer-encoding", b"content-length"):
                        continue
                    out.append(key + b": " + value)
                if body or method in (b"PUT", b"POST"):
                    out.append(b"Content-Length: %d" % len(body))
                out.append(b"Connection: keep-alive")
                payload = b"\r\n".join(out) + b"\r\n\r\n" + body
                for _attempt in (0, 1):
                    if upstream is None:
                        upstream = await asyncio.open_connection(self.host, self.port, limit=_MAX_HEAD)
                    up_reader, up_writer = upstream
                    up_writer.write(payload)
                    await up_writer.drain()
                    response_head = await _read_head(up_reader)
                    if response_head is not None:
                        break
                    up_writer.close()  # the server closed an idle keep-alive connection: reconnect once
                    upstream = None
                else:
                    return
                status_line, response_headers = _parse_headers(response_head)
                status = int(status_line.split(b" ", 2)[1])
                close_after = (_get(response_headers, b"connection") or b"").lower() == b"close"
                # moto closes its connection after every answer; the client's connection stays open,
                # as with S3 (so hop-by-hop headers are the proxy's own, not moto's).
                kept = [status_line] + [k + b": " + v for k, v in response_headers
                                        if k.lower() not in (b"connection", b"keep-alive")]
                writer.write(b"\r\n".join(kept) + b"\r\n\r\n")
                if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
                    pass
                elif b"chunked" in (_get(response_headers, b"transfer-encoding") or b"").lower():
                    self.stats.bytes_out += await _relay_chunked(up_reader, writer)
                elif _get(response_headers, b"content-length") is not None:
                    length = int(_get(response_headers, b"content-length") or b"0")
                    remaining = length
                    while remaining:
                        data = await up_reader.read(min(remaining, 1 << 20))
                        if not data:
                            raise ConnectionError("upstream closed mid-body")
                        writer.write(data)
                        remaining -= len(data)
                    self.stats.bytes_out += length
                else:  # read to close (HTTP/1.0 style); this client connection must close too
                    while data := await up_reader.read(1 << 20):
                        writer.write(data)
                        self.stats.bytes_out += len(data)
                    close_after = True
                await writer.drain()
                if close_after:
                    upstream[1].close()
                    upstream = None
                    if (_get(response_headers, b"content-length") is None
                            and b"chunked" not in (_get(response_headers, b"transfer-encoding") or b"").lower()
                            and method != b"HEAD" and status not in (204, 304)):
                        return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()


async def _serve(upstream: str, latency_ms: float, port: int) -> None:
    proxy = Proxy(upstream, latency_ms / 1000.0)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=_MAX_HEAD, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.upstream, args.latency_ms, args.port))
    except KeyboardInterrupt:
        pass


class LatencyProxy:
    """The proxy as a subprocess (started and stopped by PID)."""

    def __init__(self, upstream: str, latency_ms: float = 20.0) -> None:
        self.upstream = upstream
        self.latency_ms = latency_ms
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> LatencyProxy:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency_proxy", "--upstream", self.upstream,
             "--latency-ms", str(self.latency_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def _control(self, action: str, method: str) -> dict:
        request = urllib.request.Request(f"{self.url}/__proxy__/{action}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict:
        return self._control("stats", "GET")

    def reset(self) -> dict:
        return self._control("reset", "POST")

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
