"""The benchmark suite runs end to end at its CI size and reports sane figures (not speed targets).

Also checks the suite's own instruments: the latency proxy (delays and counts requests) and the
bulk-seeded moto server (its fast ListObjectsV2 answers exactly what moto's own does).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = {"1a cold fetch", "2 shards", "1b warm epoch", "1c listing", "1d training step",
            "1e uploads and orchestration"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--results", str(out / "RESULTS.md"),
         "--json", str(out / "results.json")],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
    )
    seconds = time.perf_counter() - started
    return result, out, seconds


def test_quick_run_succeeds_and_prints_the_table_last(quick_run):
    result, out, seconds = quick_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    assert data["errors"] == {}
    last_lines = result.stdout.strip().splitlines()[-len(data["rows"]) - 1:]
    assert last_lines[0].startswith("section")
    assert all(any(row["section"] in line for row in data["rows"]) for line in last_lines[1:])


def test_results_markdown_names_machine_sizes_and_settings(quick_run):
    _, out, _ = quick_run
    text = (out / "RESULTS.md").read_text()
    for needle in ("## Machine", "**cores**", "**torch**", "**gpu**", "**cpu**", "## Settings",
                   "proxy first-byte latency", "frames (cold fetch, warm epoch, shards)", "## Ratios", "quick"):
        assert needle in text, needle
    for section in SECTIONS:
        assert f"| {section} |" in text, section


def test_every_figure_is_sane(quick_run):
    _, out, _ = quick_run
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {row["section"] for row in rows} == SECTIONS
    for row in rows:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
        if row["ratio"] is not None:
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
            baseline = row["baseline_value"]
            assert baseline is not None and math.isfinite(baseline) and baseline > 0
    by_name = {(row["section"], row["name"]): row for row in rows}
    shard_requests = by_name[("2 shards", "warm_cache from shards: requests")]
    assert shard_requests["value"] < shard_requests["baseline_value"]  # fewer requests than one per frame
    memory = by_name[("1c listing", "peak RSS growth per extra frame")]
    assert memory["value"] < 5000  # bytes per frame: no Python object per frame kept


# ------------------------------------------------------------------------------ instruments


def test_latency_proxy_delays_counts_and_passes_bodies(moto_endpoint):
    import boto3

    from benchmarks.latency_proxy import LatencyProxy

    bucket = f"bench-proxy-{uuid.uuid4().hex[:8]}"
    with LatencyProxy(moto_endpoint, latency_ms=60) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        body = bytes(range(256)) * 300
        client.put_object(Bucket=bucket, Key="a/b.bin", Body=body)  # sends Expect: 100-continue
        proxy.reset()
        started = time.perf_counter()
        assert client.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == body
        assert time.perf_counter() - started >= 0.06
        assert client.get_object(Bucket=bucket, Key="a/b.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
        assert client.head_object(Bucket=bucket, Key="a/b.bin")["ContentLength"] == len(body)
        stats = proxy.stats()
        assert stats["requests"] == 3 and stats["range_gets"] == 1 and stats["by_method"] == {"GET": 2, "HEAD": 1}
        assert proxy.reset()["requests"] == 0


def test_bulk_server_lists_exactly_like_moto(moto_endpoint):
    import boto3

    from benchmarks.moto_bulk import BulkMotoServer

    keys = sorted({f"p/{g}/{e}/{n}.png" for g in ("a", "b", "a-b", "a b") for e in ("x", "x.y", "z/w")
                   for n in range(9)}
                  | {"p/top.png", "p/a/", "q/x.png", "p/é/ü&1.png"})
    reference = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"bench-bulk-{uuid.uuid4().hex[:8]}"
    reference.create_bucket(Bucket=bucket)
    for key in keys:
        reference.put_object(Bucket=bucket, Key=key, Body=b"x")

    def listing(client, **kwargs):
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, **kwargs):
            found.append(([(o["Key"], o["Size"]) for o in page.get("Contents", [])],
                          [p["Prefix"] for p in page.get("CommonPrefixes", [])]))
        return found

    with BulkMotoServer() as server:
        fast = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
        fast.create_bucket(Bucket=bucket)
        assert server.bulk_put(bucket, keys) == len(keys)
        for kwargs in (dict(Prefix="p/"), dict(Prefix="p/", Delimiter="/"), dict(Prefix="p/a", Delimiter="/"),
                       dict(Prefix="", PaginationConfig={"PageSize": 7}),
                       dict(Prefix="p/", Delimiter="/", PaginationConfig={"PageSize": 1}),
                       dict(Prefix="p/b/", StartAfter="p/b/x/3.png"), dict(Prefix="nothing/")):
            assert listing(fast, **kwargs) == listing(reference, **kwargs), kwargs


def test_streaming_benchmark_quick_run_holds_the_disk_limit_and_reads_each_shard_once():
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench_streaming", "--quick"],
                            capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((ROOT / "benchmarks" / "STREAMING-quick.json").read_text())["results"]
    assert report["baseline"]["mode"].endswith("all kept on local disk")  # warmed before training
    packed, unpacked = report["packed_4x"], report["unpacked_4x"]
    assert packed["mode"].endswith(unpacked["mode"].split("; ")[-1]) and "streamed" in packed["mode"]
    assert 0 < packed["disk_max"] <= packed["max_cache_bytes"]
    assert packed["gets_per_epoch"] <= report["pack_4x"]["shards"] + 0.01 * packed["frames"]
    assert unpacked["gets_per_epoch"] >= unpacked["frames"]  # one GET per frame: why packing matters
    kept = report["unpacked_fit"]  # decoded units on local disk from epoch 2: no request, within the limit
    assert kept["mode"].endswith("(kept as decoded units); all kept on local disk") and kept["gets_per_epoch"] == 0
    assert 0 < kept["disk_max"] <= kept["max_cache_bytes"]
    assert report["ceiling"]["mode"] == "in memory" and report["ceiling"]["frames_per_second"] > 0
    assert report["planning"]["peak_bytes_per_frame"] <= 200
    assert "| packed, bucket 4× the cache | streamed (larger than the cache) |" in result.stdout
