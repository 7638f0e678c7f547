"""A fault-injecting HTTP proxy in front of moto's S3 server, for tests.

The pipeline talks to the proxy as its S3 endpoint; switches on the proxy make chosen
requests fail while the server behind it keeps its data, so a test can break one
upload, then repair it and retry.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied (injected by the test proxy)</Message></Error>"
)


class FaultProxy:
    """Forwards every request to `upstream`; `deny_put` (a regex on the path) answers matching PUTs with 403.

    `seen` records each request's (method, path, headers). With `bucket_owner` set, a request whose
    `x-amz-expected-bucket-owner` (or `x-amz-source-expected-bucket-owner`) names another account is
    answered with 403 AccessDenied, as AWS does and moto does not.
    """

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.deny_put: re.Pattern[str] | None = None
        self.denied: list[str] = []
        self.requests = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.bucket_owner: str | None = None
        # Request headers removed before forwarding (lower case), as a store that ignores them would.
        self.strip_headers: set[str] = set()
        self._init_faults()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                proxy.requests += 1
                proxy.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                owner = proxy.bucket_owner
                owner_headers = ("x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner")
                claimed = {self.headers.get(h) for h in owner_headers}
                if owner is not None and claimed - {None, owner}:
                    proxy.denied.append(self.path)
                    _answer_error(self, 403, "Forbidden", _ACCESS_DENIED)
                    return
                if proxy._intercept(self, body):
                    return
                pattern = proxy.deny_put
                if self.command == "PUT" and pattern is not None and pattern.search(self.path):
                    proxy.denied.append(self.path)
                    _answer_error(self, 403, "Forbidden", _ACCESS_DENIED)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP and k.lower() not in proxy.strip_headers}
                headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    # A HEAD answer has no body but tells the object's size: pass that through.
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._track_inflight(Handler)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ network faults
    # `add_fault(kind, match)` makes requests whose "METHOD /path?query" matches the regex fail:
    #   drop      close the connection without answering; the request never reaches S3
    #   reset     forward it (it takes effect), answer half the response, then reset the connection
    #   slowdown  answer 503 SlowDown, S3's throttling error
    #   truncate  forward a PUT with only the first half of its body (checksum headers removed), as a
    #             broken middlebox or store would, and relay S3's 200
    #   delay     wait `delay` seconds, then forward normally
    #   deny      answer 403 AccessDenied, as S3 does for a permission the keys lack
    #   expired   answer 400 ExpiredToken, as S3 does once temporary (STS) credentials have run out
    #   refuse    answer 412 PreconditionFailed, as S3 does for a conditional write whose condition failed
    #   internal, badgateway, timeout   answer 500 InternalError, 502 or 504: 5xx errors botocore retries as a 503
    # `rate` injects into that share of matching requests (seeded, so runs repeat), `every=n` into the
    # 1st, (n+1)th, … match only (so a client's retry of it goes through), `after=k` lets the first k
    # matches through, `times` caps the injections. `start_when` (a regex) keeps the fault off until a
    # request matching it arrives (that request included): "from the upload of epoch 2 on, every request".
    # `go_down()` takes the endpoint down: the listening socket is closed (connections are refused) and
    # open keep-alive connections are closed unanswered; `come_back()` listens on the same port again.
    # `down_when(match)` goes down when a matching request arrives (that request is dropped) and then,
    # once no forwarded request is still in flight, calls `on_down()` from another thread.

    def _init_faults(self) -> None:
        self.faults: list[Fault] = []
        self.injected: list[tuple[str, str, str]] = []  # (kind, method, path)
        self.down = False
        self.refused = False
        self.went_down = threading.Event()
        self._trigger: re.Pattern[str] | None = None
        self._on_down = None
        self._fault_lock = threading.Lock()
        self._inflight = 0
        self.max_inflight = 0  # the most requests forwarded at once (concurrency of the client)
        self._rng = random.Random(0)

    def add_fault(
        self,
        kind: str,
        match: str = ".*",
        *,
        rate: float = 1.0,
        every: int = 1,
        after: int = 0,
        times: int | None = None,
        delay: float = 0.0,
        seed: int | None = None,
        start_when: str | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: one of {', '.join(FAULT_KINDS)}")
        fault = Fault(kind, re.compile(match), rate=rate, every=max(1, every), after=after, times=times, delay=delay,
                      start=re.compile(start_when) if start_when else None)
        with self._fault_lock:
            if seed is not None:
                self._rng.seed(seed)
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._fault_lock:
            self.faults.clear()
            self._trigger = None
            self._on_down = None

    def injected_count(self, kind: str | None = None) -> int:
        return sum(1 for entry in list(self.injected) if kind is None or entry[0] == kind)

    def go_down(self, refuse: bool = True) -> None:
        with self._fault_lock:
            self.down = True
            close = refuse and not self.refused
            self.refused = self.refused or refuse
        self.went_down.set()
        if close:
            self.server.shutdown()
            self.server.server_close()

    def come_back(self) -> None:
        with self._fault_lock:
            reopen = self.refused
            self.down = False
            self.refused = False
            self._trigger = None
        self.went_down.clear()
        if not reopen:
            return
        port = self.server.server_address[1]
        deadline = time.monotonic() + 10
        while True:
            try:
                server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.daemon_threads = True
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def down_when(self, match: str, on_down=None, refuse: bool = True) -> None:
        with self._fault_lock:
            self._trigger = re.compile(match)
            self._on_down = (on_down, refuse)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no forwarded request is in flight (after going down, S3 then changes no more)."""
        deadline = time.monotonic() + timeout
        while self._inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def _track_inflight(self, handler_class) -> None:
        proxy = self
        self._handler_class = handler_class
        forward = handler_class._forward

        def tracked(handler) -> None:
            with proxy._fault_lock:
                proxy._inflight += 1
                proxy.max_inflight = max(proxy.max_inflight, proxy._inflight)
            try:
                forward(handler)
            finally:
                with proxy._fault_lock:
                    proxy._inflight -= 1

        handler_class.do_GET = handler_class.do_PUT = handler_class.do_POST = tracked
        handler_class.do_DELETE = handler_class.do_HEAD = tracked

    def _intercept(self, handler, body: bytes) -> bool:
        """Apply the switches to one request; True when it has been answered (or dropped) here."""
        request = f"{handler.command} {handler.path}"
        chosen: Fault | None = None
        tripped = None
        with self._fault_lock:
            if not self.down and self._trigger is not None and self._trigger.search(request):
                self.down, self._trigger = True, None
                tripped = self._on_down
            if self.down:
                self.injected.append(("down", handler.command, handler.path))
            else:
                for fault in self.faults:
                    if fault.start is not None:
                        if not fault.start.search(request):
                            continue
                        fault.start = None  # on from here
                    if not fault.pattern.search(request):
                        continue
                    fault.matched += 1
                    if fault.times is not None and fault.injected >= fault.times:
                        continue
                    position = fault.matched - fault.after - 1
                    if position < 0 or position % fault.every or self._rng.random() >= fault.rate:
                        continue
                    fault.injected += 1
                    chosen = fault
                    self.injected.append((fault.kind, handler.command, handler.path))
                    break
        if self.down:
            handler.close_connection = True  # answer nothing
            if tripped is not None:
                threading.Thread(target=self._after_trip, args=tripped, daemon=True).start()
            return True
        if chosen is None:
            return False
        if chosen.kind == "delay":
            time.sleep(chosen.delay)
            return False
        if chosen.kind == "drop":
            handler.close_connection = True
            return True
        if chosen.kind == "slowdown":
            _answer_error(handler, 503, "Slow Down", _SLOW_DOWN)
            return True
        if chosen.kind == "deny":
            _answer_error(handler, 403, "Forbidden", _ACCESS_DENIED)
            return True
        if chosen.kind in _ANSWERS:
            _answer_error(handler, *_ANSWERS[chosen.kind])
            return True
        if chosen.kind == "truncate" and handler.command == "PUT" and body:
            status, reason, headers, payload = self._upstream(handler, *_truncated_put(handler, body))
            self._relay(handler, status, reason, headers, payload)
            return True
        if chosen.kind == "reset":
            status, reason, headers, payload = self._upstream(handler, handler.path, body, _plain_headers(handler))
            if payload and handler.command != "HEAD":
                handler.send_response(status, reason)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        handler.send_header(key, value)
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload[: len(payload) // 2])
            handler.close_connection = True
            try:
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                handler.connection.close()  # RST, not FIN
            except OSError:
                pass
            return True
        return False

    def _after_trip(self, on_down, refuse: bool) -> None:
        self.go_down(refuse=refuse)
        self.wait_idle()
        if on_down is not None:
            on_down()

    def _upstream(self, handler, path: str, body: bytes, headers: dict[str, str]):
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            connection.request(handler.command, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()

    @staticmethod
    def _relay(handler, status: int, reason: str, headers, payload: bytes) -> None:
        handler.send_response(status, reason)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)


FAULT_KINDS = ("drop", "reset", "slowdown", "truncate", "delay", "deny", "expired", "refuse", "internal", "badgateway",
               "timeout")
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected by the test proxy)</Message></Error>"
)


def _error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message} (injected by the test proxy)</Message></Error>").encode()


# Fault kinds answered with an S3 error: (status, reason, body).
_ANSWERS = {
    "expired": (400, "Bad Request", _error_body("ExpiredToken", "The provided token has expired.")),
    "refuse": (412, "Precondition Failed",
               _error_body("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")),
    # 5xx answers other than 503 SlowDown: a failing store, or a load balancer in front of it.
    "internal": (500, "Internal Server Error",
                 _error_body("InternalError", "We encountered an internal error. Please try again.")),
    "badgateway": (502, "Bad Gateway", _error_body("BadGateway", "The upstream server did not answer properly.")),
    "timeout": (504, "Gateway Timeout", _error_body("GatewayTimeout", "The upstream server did not answer in time.")),
}
_CHECKSUM_HEADERS = ("content-md5", "x-amz-trailer", "x-amz-decoded-content-length", "x-amz-sdk-checksum-algorithm")


@dataclass
class Fault:
    kind: str
    pattern: re.Pattern[str]
    rate: float = 1.0
    every: int = 1
    after: int = 0
    times: int | None = None
    delay: float = 0.0
    start: re.Pattern[str] | None = None  # off until a request matches this
    matched: int = 0
    injected: int = 0


def _answer_error(handler, status: int, reason: str, body: bytes) -> None:
    """An S3 error answer (a HEAD answer carries no body)."""
    payload = b"" if handler.command == "HEAD" else body
    handler.send_response(status, reason)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _plain_headers(handler) -> dict[str, str]:
    return {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}


def _decode_aws_chunked(body: bytes) -> bytes:
    """The payload of an `aws-chunked` body (size;ext CRLF data CRLF … 0 CRLF trailers)."""
    out, position = [], 0
    while True:
        end = body.index(b"\r\n", position)
        size = int(body[position:end].split(b";")[0].strip() or b"0", 16)
        position = end + 2
        if size == 0:
            return b"".join(out)
        out.append(body[position:position + size])
        position += size + 2


def _truncated_put(handler, body: bytes) -> tuple[str, bytes, dict[str, str]]:
    """The same PUT carrying only the first half of its payload, with nothing that could reveal it."""
    headers = _plain_headers(handler)
    encoding = handler.headers.get("Content-Encoding", "")
    if "aws-chunked" in encoding:
        body = _decode_aws_chunked(body)
        rest = [part.strip() for part in encoding.split(",") if part.strip() and part.strip() != "aws-chunked"]
        headers = {k: v for k, v in headers.items() if k.lower() != "content-encoding"}
        if rest:
            headers["Content-Encoding"] = ", ".join(rest)
    headers = {
        k: v for k, v in headers.items()
        if k.lower() not in _CHECKSUM_HEADERS and not k.lower().startswith("x-amz-checksum-")
    }
    headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    payload = body[: len(body) // 2]
    headers["Content-Length"] = str(len(payload))
    return handler.path, payload, headers
