"""Compare streaming dataset libraries against pokevq's own tar shards on a local S3 endpoint.

Libraries: litdata (`litdata.optimize` + `StreamingDataset`/`StreamingDataLoader`), MosaicML
Streaming (`MDSWriter` + `StreamingDataset`/`StreamingDataLoader`), WebDataset (`WebDataset`
reading pokevq's tar shards unchanged, through a boto3 opener or a `pipe:` command), and a
plain baseline (boto3 GET of a whole pokevq tar shard + `tarfile`, what pokevq's shards allow
with no library). Findings and the measured table: benchmarks/STREAMING-LIBRARIES.md.

This is a one-off evaluation, not part of pokevq: nothing imports it and tests must not. It runs
in its OWN virtual environment, never in pokevq's .venv, because the libraries pull in many
packages (and MosaicML Streaming downgrades numpy):

    python3 -m venv /tmp/libvenv
    /tmp/libvenv/bin/pip install torch==2.13.0            # the local CPU wheel, as bootstrap.sh does
    echo 'torch==2.13.0+cpu' > /tmp/constraints.txt
    /tmp/libvenv/bin/pip install -c /tmp/constraints.txt litdata mosaicml-streaming webdataset
    /tmp/libvenv/bin/pip uninstall -y torchvision         # PyPI's torchvision is built for CUDA torch
                                                          # and fails to import next to torch+cpu
    /tmp/libvenv/bin/pip uninstall -y obstore             # litdata's obstore path refuses http://
                                                          # endpoints; without it litdata uses boto3
    /tmp/libvenv/bin/python -m benchmarks.streaming_libraries [--only litdata,mosaic,wds,wds-pipe,baseline]
                                                          [--json out.json]

It also needs pokevq's own venv (default /work/main/.venv, `--pokevq-python`), which supplies
moto's server, benchmarks/latency_proxy.py (adds 20 ms per request and counts requests) and
pokevq itself (synthetic frames, `pokevq.data.pack.pack` for the tar shards). Everything listens
on 127.0.0.1 only; dummy AWS credentials ("testing") are set for moto. MosaicML Streaming imports
torchvision at `import streaming`; when no importable torchvision exists, the processes that run it
get a three-name stub package first on their PYTHONPATH (recorded in the output as `torchvision_stub`).

Each library runs in its own child process (`--child NAME`): one epoch with a cold cache through
a torch DataLoader with 2 workers (PNG bytes -> uint8 HxWx3 with Pillow), a second (warm) epoch,
a mid-epoch resume check where the library has one, and a byte-bounded cache check where it has
one (peak size of the cache folder, sampled every 10 ms). Requests are counted by the proxy.
The whole run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUCKET = "bench"
FRAMES_PREFIX = "frames/"
LIBRARIES = ("baseline", "wds", "wds-pipe", "litdata", "mosaic")

# ----------------------------------------------------------------------------------------------
# Shared helpers (parent and children)
# ----------------------------------------------------------------------------------------------


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy, as torch wants


def proxy_call(control: str, action: str) -> dict:
    method = "POST" if action == "reset" else "GET"
    request = urllib.request.Request(f"{control}/__proxy__/{action}", method=method,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def s3_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))


def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class PeakSize:
    """Samples a folder's total size every `interval` seconds in a thread; `.peak` is the largest seen."""

    def __init__(self, path: str, interval: float = 0.01) -> None:
        self.path, self.interval, self.peak = path, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, dir_bytes(self.path))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, dir_bytes(self.path))


def run_epoch(loader, control: str, expected: int) -> dict:
    """One pass over `loader`; frames/s, keys seen and the proxy's request counts."""
    proxy_call(control, "reset")
    keys: list[str] = []
    started = time.perf_counter()
    frames = 0
    for batch in loader:
        batch_keys, pixels = batch
        assert pixels.dtype.__str__() in ("torch.uint8",), pixels.dtype
        assert tuple(pixels.shape[1:]) == (144, 160, 3), tuple(pixels.shape)
        frames += int(pixels.shape[0])
        keys.extend(batch_keys)
    seconds = time.perf_counter() - started
    stats = proxy_call(control, "stats")
    return {"frames": frames, "unique_keys": len(set(keys)), "expected": expected, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1), "requests": stats["requests"],
            "by_method": stats["by_method"], "range_gets": stats["range_gets"], "bytes_out": stats["bytes_out"],
            "keys": keys}


def strip_keys(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "keys"}


# ----------------------------------------------------------------------------------------------
# Children: one library each
# ----------------------------------------------------------------------------------------------


def child_baseline(ctx: dict) -> dict:
    """boto3 GET of each whole pokevq tar shard + tarfile, shards split between workers."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    endpoint, shards = ctx["endpoint"], ctx["shards"]

    class TarShards(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            wid, nw = (info.id, info.num_workers) if info else (0, 1)
            client = s3_client(endpoint)
            for shard in shards[wid::nw]:
                body = client.get_object(Bucket=BUCKET, Key=shard)["Body"].read()
                with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                    for member in tar:
                        if member.isfile() and member.name.endswith(".png"):
                            yield member.name, torch.from_numpy(decode_png(tar.extractfile(member).read()))

    loader = DataLoader(TarShards(), batch_size=ctx["batch_size"], num_workers=ctx["workers"])
    first = run_epoch(loader, ctx["control"], ctx["frames"])
    second = run_epoch(loader, ctx["control"], ctx["frames"])
    return {"epoch": strip_keys(first), "warm_epoch": strip_keys(second),
            "resume": "not built in (pokevq's own loader decides order; not measured here)",
            "cache": "none in this baseline (pokevq's own frame cache not measured here)"}


def _wds_boto3_opener(endpoint: str):
    """A gopen handler for s3:// URLs: streams the object body through boto3 (one GET per shard)."""
    clients: dict[int, object] = {}

    def gopen_s3(url, mode="rb", bufsize=8192):
        client = clients.get(os.getpid())
        if client is None:
            client = clients[os.getpid()] = s3_client(endpoint)
        bucket, _, key = url[len("s3://"):].partition("/")
        return client.get_object(Bucket=bucket, Key=key)["Body"]._raw_stream

    return gopen_s3


def child_wds(ctx: dict, pipe: bool = False) -> dict:
    import torch
    import webdataset as wds
    from torch.utils.data import DataLoader

    endpoint = ctx["endpoint"]
    if pipe:
        # One helper process per shard that writes the object to stdout (as `pipe:aws s3 cp s3://... -`).
        getter = ("import boto3,sys;from botocore.config import Config;"
                  f"c=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1',"
                  "config=Config(s3={'addressing_style':'path'}));"
                  "c.download_fileobj(sys.argv[1],sys.argv[2],sys.stdout.buffer)")
        urls = [f"pipe:{sys.executable} -c \"{getter}\" {BUCKET} {shard}" for shard in ctx["shards"]]
    else:
        wds_gopen = sys.modules["webdataset.gopen"]  # `webdataset.gopen` the attribute is the function
        wds_gopen.gopen_schemes["s3"] = _wds_boto3_opener(endpoint)  # forked workers inherit it
        urls = [f"s3://{BUCKET}/{shard}" for shard in ctx["shards"]]

    def to_pair(sample):
        return sample["__key__"], torch.from_numpy(decode_png(sample["png"]))

    def make(cache_dir=None, cache_size=-1):
        dataset = wds.WebDataset(urls, shardshuffle=False, cache_dir=cache_dir, cache_size=cache_size,
                                 empty_check=False).map(to_pair)
        return DataLoader(dataset, batch_size=ctx["batch_size"], num_workers=ctx["workers"])

    loader = make()
    first = run_epoch(loader, ctx["control"], ctx["frames"])
    second = run_epoch(loader, ctx["control"], ctx["frames"])
    out = {"epoch": strip_keys(first), "warm_epoch": strip_keys(second),
           "resume": "no state_dict in WebDataset 1.x: a resume must skip samples itself (or use wids' "
                     "indexed ShardListDataset with a resumable sampler)"}
    if not pipe:
        # Whole-shard file cache with LRU cleanup to cache_size bytes.
        limit = ctx["cache_limit"]
        cache = tempfile.mkdtemp(prefix="wds-cache-", dir=ctx["workdir"])
        loader = make(cache_dir=cache, cache_size=limit)
        with PeakSize(cache) as peak:
            bounded = run_epoch(loader, ctx["control"], ctx["frames"])
        out["cache"] = {"limit_bytes": limit, "peak_bytes": peak.peak, "epoch": strip_keys(bounded)}
    else:
        out["cache"] = "same FileCache as the boto3 variant (not repeated)"
    return out


def child_litdata(ctx: dict) -> dict:
    import litdata
    import torch
    from litdata import StreamingDataLoader, StreamingDataset

    remote = f"s3://{BUCKET}/litdata"
    storage = {"endpoint_url": ctx["endpoint"]}

    class Frames(StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return item["key"], torch.from_numpy(decode_png(item["png"]))

    def make(cache_dir: str, **kw):
        dataset = Frames(remote, cache_dir=cache_dir, storage_options=storage, **kw)
        return StreamingDataLoader(dataset, batch_size=ctx["batch_size"], num_workers=ctx["workers"])

    out: dict = {"version": litdata.__version__}
    proxy_call(ctx["control"], "reset")
    loader = make(tempfile.mkdtemp(prefix="lit-cache-", dir=ctx["workdir"]))
    out["setup_requests"] = proxy_call(ctx["control"], "stats")["requests"]  # index.json etc., once per dataset
    first = run_epoch(loader, ctx["control"], ctx["frames"])
    second = run_epoch(loader, ctx["control"], ctx["frames"])
    out["epoch"], out["warm_epoch"] = strip_keys(first), strip_keys(second)

    # Resume: stop after `stop` batches, save state_dict, finish; a fresh loader resumes from the state.
    # litdata's state names the cache folder and refuses another path (force_override_state_dict=True
    # lifts that), so the resumed loader uses the same path, emptied: a restart on a fresh machine.
    resume_cache = tempfile.mkdtemp(prefix="lit-res-", dir=ctx["workdir"])

    def fresh_loader():
        shutil.rmtree(resume_cache, ignore_errors=True)
        os.makedirs(resume_cache)
        return make(resume_cache, shuffle=True, seed=7)

    out["resume"] = resume_check(fresh_loader, ctx, lambda loader, state: loader.load_state_dict(state))

    limit = ctx["cache_limit"]
    cache = tempfile.mkdtemp(prefix="lit-bounded-", dir=ctx["workdir"])
    loader = make(cache, max_cache_size=limit)
    with PeakSize(cache) as peak:
        bounded = run_epoch(loader, ctx["control"], ctx["frames"])
    out["cache"] = {"limit_bytes": limit, "peak_bytes": peak.peak, "epoch": strip_keys(bounded)}
    return out


def resume_check(make_loader, ctx: dict, load) -> dict:
    stop = max(1, (ctx["frames"] // ctx["batch_size"]) * 2 // 5)
    loader = make_loader()
    keys: list[str] = []
    state = None
    for i, (batch_keys, _pixels) in enumerate(loader):
        keys.extend(batch_keys)
        if i + 1 == stop:
            state = loader.state_dict()
            consumed = len(keys)
    assert state is not None
    state = json.loads(json.dumps(state))  # what a checkpoint would hold
    del loader
    resumed_loader = make_loader()
    load(resumed_loader, state)
    proxy_call(ctx["control"], "reset")
    rest: list[str] = []
    for batch_keys, _pixels in resumed_loader:
        rest.extend(batch_keys)
    requests = proxy_call(ctx["control"], "stats")["requests"]
    expected = keys[consumed:]
    return {"stopped_after_frames": consumed, "remaining_expected": len(expected), "remaining_got": len(rest),
            "same_order": rest == expected, "same_set": sorted(rest) == sorted(expected),
            "duplicates_with_first_part": len(set(rest) & set(keys[:consumed])), "resume_requests": requests}


def _torchvision_stub(workdir: str) -> str:
    root = Path(workdir) / "tvstub" / "torchvision"
    (root / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("# stub: only the names `import streaming` touches\n")
    (root / "datasets.py").write_text("class VisionDataset:\n    def __init__(self, *a, **k):\n        pass\n\n"
                                      "class CIFAR10(VisionDataset):\n    pass\n")
    (root / "transforms" / "__init__.py").write_text("")
    (root / "transforms" / "functional.py").write_text("def to_tensor(pic):\n    raise NotImplementedError\n")
    return str(root.parent)


def torchvision_env(workdir: str) -> tuple[dict[str, str], str | bool]:
    """What a process that runs `import streaming` needs in its environment, and the note for the results.

    When this Python cannot import torchvision (missing, or PyPI's CUDA build next to torch+cpu), the stub
    goes first on PYTHONPATH, so the process and the DataLoader workers it starts all see it."""
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode == 0:
        return {}, False
    error = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
    path = os.pathsep.join(p for p in (_torchvision_stub(workdir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}, f"import torchvision failed ({error[:120]}); stub used"


def child_mosaic(ctx: dict) -> dict:
    out: dict = {"torchvision_stub": ctx["torchvision_stub"]}
    os.environ["S3_ENDPOINT_URL"] = ctx["endpoint"]
    import streaming
    import torch
    from streaming import StreamingDataLoader, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    out["version"] = streaming.__version__
    remote = f"s3://{BUCKET}/mds"
    bs = ctx["batch_size"]

    class Frames(StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return item["key"], torch.from_numpy(decode_png(item["png"]))

    def make(**kw):
        local = tempfile.mkdtemp(prefix="mds-cache-", dir=ctx["workdir"])
        dataset = Frames(remote=remote, local=local, batch_size=bs, **kw)
        return StreamingDataLoader(dataset, batch_size=bs, num_workers=ctx["workers"]), local

    proxy_call(ctx["control"], "reset")
    loader, _ = make()
    out["setup_requests"] = proxy_call(ctx["control"], "stats")["requests"]  # index.json etc., once per dataset
    first = run_epoch(loader, ctx["control"], ctx["frames"])
    second = run_epoch(loader, ctx["control"], ctx["frames"])
    out["epoch"], out["warm_epoch"] = strip_keys(first), strip_keys(second)
    del loader

    out["resume"] = resume_check(lambda: make(shuffle=True, shuffle_seed=7)[0], ctx,
                                 lambda loader, state: loader.load_state_dict(state))

    limit = ctx["cache_limit"]
    try:
        loader, local = make(cache_limit=limit)
        with PeakSize(local) as peak:
            bounded = run_epoch(loader, ctx["control"], ctx["frames"])
        out["cache"] = {"limit_bytes": limit, "peak_bytes": peak.peak, "epoch": strip_keys(bounded)}
    except Exception as exc:
        out["cache"] = f"{type(exc).__name__}: {exc}"
    return out


CHILDREN = {"baseline": child_baseline, "wds": child_wds, "wds-pipe": lambda ctx: child_wds(ctx, pipe=True),
            "litdata": child_litdata, "mosaic": child_mosaic}


# ----------------------------------------------------------------------------------------------
# Parent: servers, data, conversions, children
# ----------------------------------------------------------------------------------------------

PREP = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from pokevq.synth.generate import generate_dataset
from pokevq.storage import S3Storage
from pokevq.data.pack import pack
out, endpoint, bucket, games, episodes, frames, shard_bytes = sys.argv[1:8]
infos = generate_dataset(out, games=int(games), episodes=int(episodes), frames=int(frames))
storage = S3Storage(bucket, endpoint_url=endpoint)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda i: storage.put_bytes("frames/" + i.key, (Path(out) / i.key).read_bytes()), infos))
result = pack(storage, "frames/", shard_bytes=int(shard_bytes), threads=8)
print(json.dumps({"frames": result.frames, "bytes": result.bytes, "shards": result.shard_keys,
                  "keys": [i.key for i in infos]}))
"""


def _lit_item(path_and_key):
    path, key = path_and_key
    return {"key": key, "png": Path(path).read_bytes()}


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def convert(ctx: dict, moto: str, synth_dir: str, keys: list[str], only: set[str]) -> dict:
    """litdata and MDS copies of the same frames (PNG bytes stored as-is), written straight to S3."""
    timings = {}
    if "litdata" in only:
        # optimize() stages chunks in /tmp/chunks by default; keep them in the work folder.
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(Path(ctx["workdir"]) / "lit-chunks")
        os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(Path(ctx["workdir"]) / "lit-data")
        from litdata import optimize

        started = time.perf_counter()
        inputs = [(str(Path(synth_dir) / key), key) for key in keys]
        optimize(fn=_lit_item, inputs=inputs, output_dir=f"s3://{BUCKET}/litdata", chunk_bytes=ctx["shard_bytes"],
                 num_workers=1, storage_options={"endpoint_url": moto}, reorder_files=False, verbose=False,
                 mode="overwrite")
        timings["litdata_optimize_s"] = round(time.perf_counter() - started, 2)
    if "mosaic" in only:
        env = dict(os.environ, S3_ENDPOINT_URL=moto, **ctx["torchvision_env"])
        code = ("import sys; from benchmarks import streaming_libraries as s; "
                "s.write_mds(sys.argv[1], int(sys.argv[2]), sys.argv[3:])")
        # MDSWriter runs in a child: `import streaming` may need the torchvision stub (see torchvision_env).
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, synth_dir, str(ctx["shard_bytes"]), ctx["workdir"], *keys],
                       env=env, check=True, cwd=str(HERE.parent))
        timings["mds_write_s"] = round(time.perf_counter() - started, 2)
    return timings


def write_mds(synth_dir: str, shard_bytes: int, rest: list[str]) -> None:
    workdir, keys = rest[0], rest[1:]
    from streaming import MDSWriter

    local = tempfile.mkdtemp(prefix="mds-out-", dir=workdir)
    with MDSWriter(out=(local, f"s3://{BUCKET}/mds"), columns={"key": "str", "png": "bytes"},
                   size_limit=shard_bytes) as writer:
        for key in keys:
            writer.write({"key": key, "png": (Path(synth_dir) / key).read_bytes()})


def parent(args: argparse.Namespace) -> int:
    only = set(args.only.split(",")) if args.only else set(LIBRARIES)
    # AWS_ALLOW_HTTP: litdata uploads and prefetches through obstore, which refuses a plain-http endpoint
    # ("HTTP error: builder error") unless this is set (see STREAMING-LIBRARIES.md).
    os.environ.update(AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    workdir = tempfile.mkdtemp(prefix="streaming-libs-")
    pokevq_bin = Path(args.pokevq_python).parent
    moto_port = free_port()
    moto_proc = subprocess.Popen([str(pokevq_bin / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proxy_proc = None
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                     "python": sys.version.split()[0]}
    try:
        moto = f"http://127.0.0.1:{moto_port}"
        wait_http(moto + "/")
        s3_client(moto).create_bucket(Bucket=BUCKET)
        proxy_proc = subprocess.Popen(
            [args.pokevq_python, "-m", "benchmarks.latency_proxy", "--upstream", moto, "--latency-ms",
             str(args.latency_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True, cwd=str(HERE.parent))
        line = proxy_proc.stdout.readline()
        proxy = f"http://127.0.0.1:{int(line.split()[1])}"

        synth_dir = str(Path(workdir) / "synth")
        started = time.perf_counter()
        prep = subprocess.run(
            [args.pokevq_python, "-c", PREP, synth_dir, moto, BUCKET, str(args.games), str(args.episodes),
             str(args.frames_per_episode), str(args.shard_bytes)],
            check=True, capture_output=True, text=True, cwd=str(HERE.parent))
        data = json.loads(prep.stdout.strip().splitlines()[-1])
        results["data"] = {"frames": data["frames"], "png_bytes": data["bytes"], "pokevq_shards": len(data["shards"]),
                           "shard_bytes": args.shard_bytes, "prep_s": round(time.perf_counter() - started, 2),
                           "latency_ms": args.latency_ms, "workers": args.workers, "batch_size": args.batch_size}
        ctx = {"endpoint": proxy, "control": proxy, "shards": data["shards"], "frames": data["frames"],
               "batch_size": args.batch_size, "workers": args.workers, "workdir": workdir,
               "shard_bytes": args.shard_bytes, "cache_limit": args.cache_limit}
        ctx["torchvision_env"], ctx["torchvision_stub"] = torchvision_env(workdir) if "mosaic" in only else ({}, False)
        results["data"].update(convert(ctx, moto, synth_dir, data["keys"], only))
        for name in LIBRARIES:
            if name not in only:
                continue
            ctx_path = Path(workdir) / f"ctx-{name}.json"
            ctx_path.write_text(json.dumps(ctx))
            started = time.perf_counter()
            env = dict(os.environ, **ctx["torchvision_env"]) if name == "mosaic" else None
            run = subprocess.run([sys.executable, "-m", "benchmarks.streaming_libraries", "--child", name, "--ctx",
                                  str(ctx_path)], capture_output=True, text=True, timeout=args.child_timeout,
                                 cwd=str(HERE.parent), env=env)
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode == 0 and lines:
                results[name] = json.loads(lines[-1][len("RESULT "):])
            else:
                results[name] = {"error": f"exit {run.returncode}", "stderr_tail": run.stderr[-3000:]}
            results[name]["child_wall_s"] = round(time.perf_counter() - started, 1)
            print(f"== {name}\n{json.dumps(results[name], indent=1)}", flush=True)
    finally:
        if proxy_proc is not None:
            stop(proxy_proc)
        stop(moto_proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(summary(results))
    return 0


def summary(results: dict) -> str:
    rows = ["| library | cold frames/s | cold requests | warm frames/s | warm requests | resume | cache peak/limit |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in LIBRARIES:
        r = results.get(name)
        if not r:
            continue
        if "error" in r:
            rows.append(f"| {name} | error: {r['error']} | | | | | |")
            continue
        resume = r.get("resume")
        if isinstance(resume, dict):
            resume = (f"order {'exact' if resume['same_order'] else 'differs'}, set "
                      f"{'ok' if resume['same_set'] else 'WRONG'}, {resume['duplicates_with_first_part']} dup")
        else:
            resume = "none"
        cache = r.get("cache")
        cache = f"{cache['peak_bytes']}/{cache['limit_bytes']}" if isinstance(cache, dict) else "-"
        rows.append(f"| {name} | {r['epoch']['frames_per_s']} | {r['epoch']['requests']} | "
                    f"{r['warm_epoch']['frames_per_s']} | {r['warm_epoch']['requests']} | {resume} | {cache} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(LIBRARIES)}")
    parser.add_argument("--pokevq-python", default=str(HERE.parent / ".venv" / "bin" / "python"))
    parser.add_argument("--games", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--frames-per-episode", type=int, default=100)
    parser.add_argument("--shard-bytes", type=int, default=512 * 1024)
    parser.add_argument("--cache-limit", type=int, default=3 * 512 * 1024, help="bytes, for the bounded-cache check")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child-timeout", type=int, default=300)
    parser.add_argument("--json", default="")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ctx = json.loads(Path(args.ctx).read_text())
        result = CHILDREN[args.child](ctx)
        print("RESULT " + json.dumps(result), flush=True)
        os._exit(0)  # some libraries leave non-daemon threads or shared memory finalizers behind
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
