"""moto's S3 server, exactly as `moto_server` runs it, plus one endpoint to create many tiny objects fast.

Creating 100,000 objects through the S3 API costs moto about 3 ms of CPU each (over five
minutes on two cores), so the listing benchmark seeds its bucket in-process instead:

    POST /__bulk__/put  {"bucket": "b", "keys": ["k1", ...], "body": "xx"}   -> {"created": n}

Everything else (the listing being measured included) is moto's own WSGI app under
werkzeug's threaded server with moto's request handler, as in `moto.server.main`.

    python -m benchmarks.moto_bulk --port PORT
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pokevq.storage.local_server import stop_process_group

ROOT = Path(__file__).resolve().parents[1]


class _SortedKeys:
    """Sorted key names of one bucket, rebuilt when the bucket's key count changes."""

    def __init__(self) -> None:
        self.count = -1
        self.names: list[str] = []


def _next_after(folder: str) -> str:
    """The smallest string greater than every string that starts with `folder`."""
    return folder[:-1] + chr(ord(folder[-1]) + 1)


def _list_v2(backend: Any, index: dict, bucket_name: str, query: dict) -> bytes:
    """ListObjectsV2 with S3's semantics (prefix, delimiter, max-keys, continuation, start-after)
    at a cost proportional to the page, not to the bucket (moto's own is O(bucket) per page)."""
    import base64
    import bisect
    from xml.sax.saxutils import escape

    bucket = backend.get_bucket(bucket_name)
    state = index.setdefault(bucket_name, _SortedKeys())
    if state.count != len(bucket.keys):
        state.names = sorted(bucket.keys.keys())
        state.count = len(bucket.keys)
    names = state.names
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = int(query.get("max-keys", "1000"))
    token = query.get("continuation-token")
    start_after = query.get("start-after", "")
    if token:
        kind, _, last = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        position = bisect.bisect_left(names, _next_after(last)) if kind == "p" else bisect.bisect_right(names, last)
    elif start_after:
        position = bisect.bisect_right(names, start_after)
    else:
        position = bisect.bisect_left(names, prefix)
    position = max(position, bisect.bisect_left(names, prefix))
    contents: list[str] = []
    folders: list[str] = []
    last_item = ""
    truncated = False
    while position < len(names):
        name = names[position]
        if not name.startswith(prefix):
            break
        if len(contents) + len(folders) >= max_keys:
            truncated = True
            break
        rest = name[len(prefix):]
        if delimiter and delimiter in rest:
            folder = prefix + rest.split(delimiter, 1)[0] + delimiter
            folders.append(f"<CommonPrefixes><Prefix>{escape(folder)}</Prefix></CommonPrefixes>")
            last_item = "p:" + folder
            position = bisect.bisect_left(names, _next_after(folder), position)
            continue
        key = bucket.keys.get(name)
        contents.append(
            f"<Contents><Key>{escape(name)}</Key><LastModified>{key.last_modified_ISO8601}</LastModified>"
            f"<ETag>{escape(key.etag)}</ETag><Size>{key.size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
        last_item = "k:" + name
        position += 1
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{escape(bucket_name)}</Name><Prefix>{escape(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>",
        f"<KeyCount>{len(contents) + len(folders)}</KeyCount>",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
    ]
    if delimiter:
        parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    if token:
        parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
    if start_after:
        parts.append(f"<StartAfter>{escape(start_after)}</StartAfter>")
    if truncated:
        parts.append(f"<NextContinuationToken>{base64.urlsafe_b64encode(last_item.encode()).decode()}</NextContinuationToken>")
    parts.extend(contents)
    parts.extend(folders)
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def _bulk_app(app: Callable) -> Callable:
    from urllib.parse import parse_qsl

    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    index: dict[str, _SortedKeys] = {}

    def wrapped(environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        listing = environ.get("REQUEST_METHOD") == "GET" and query.get("list-type") == "2"
        if listing and path.count("/") == 1 and len(path) > 1:
            backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["aws"]
            try:
                payload = _list_v2(backend, index, path[1:], query)
            except Exception:  # noqa: BLE001 - anything unusual (missing bucket...): moto answers it
                return app(environ, start_response)
            start_response("200 OK", [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))])
            return [payload]
        if path != "/__bulk__/put":
            return app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        spec = json.loads(environ["wsgi.input"].read(length))
        backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["aws"]
        body = spec.get("body", "x").encode()
        bodies = [base64.b64decode(b) for b in spec["bodies"]] if "bodies" in spec else None
        for i, key in enumerate(spec["keys"]):
            backend.put_object(spec["bucket"], key, bodies[i] if bodies else body, disable_notification=True)
        payload = json.dumps({"created": len(spec["keys"])}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # type: ignore[attr-defined]
    run_simple(args.host, args.port, _bulk_app(app), threaded=True, request_handler=MotoRequestHandler)


class BulkMotoServer:
    """The server above as a subprocess, like `pokevq.local_s3.LocalS3Server`."""

    def __init__(self) -> None:
        from pokevq.storage.local_server import free_port

        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> BulkMotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.moto_bulk", "--port", str(self.port)], cwd=str(ROOT),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto bulk server exited (code {self.process.returncode})")
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto bulk server did not start")

    def bulk_put(self, bucket: str, keys: list[str], body: str = "x") -> int:
        created = 0
        for start in range(0, len(keys), 20_000):
            chunk = keys[start:start + 20_000]
            request = urllib.request.Request(
                f"{self.endpoint_url}/__bulk__/put", method="POST",
                data=json.dumps({"bucket": bucket, "keys": chunk, "body": body}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                created += json.loads(response.read())["created"]
        return created

    def bulk_put_bodies(self, bucket: str, items: list[tuple[str, bytes]]) -> int:
        """Objects with their own bodies (e.g. PNG frames), a few thousand per request."""
        created = 0
        for start in range(0, len(items), 2_000):
            chunk = items[start:start + 2_000]
            request = urllib.request.Request(
                f"{self.endpoint_url}/__bulk__/put", method="POST",
                data=json.dumps({"bucket": bucket, "keys": [k for k, _ in chunk],
                                 "bodies": [base64.b64encode(b).decode() for _, b in chunk]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                created += json.loads(response.read())["created"]
        return created

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> BulkMotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
