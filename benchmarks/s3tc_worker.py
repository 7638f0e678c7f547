"""Runs in benchmarks/.venv: s3torchconnector's S3MapDataset through a DataLoader; prints one JSON line."""

from __future__ import annotations

import argparse
import json
import time


def read_all(reader):  # module level: DataLoader workers are spawned and unpickle it
    return reader.read()


def as_list(items):
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    import s3torchconnector
    from s3torchconnector import S3ClientConfig, S3MapDataset
    from torch.utils.data import DataLoader

    with open(args.keys) as handle:
        keys = json.load(handle)
    uris = [f"s3://{args.bucket}/{key}" for key in keys]
    dataset = S3MapDataset.from_objects(
        uris, region="us-east-1", endpoint=args.endpoint, transform=read_all,
        s3client_config=S3ClientConfig(force_path_style=True),
    )
    loader = DataLoader(dataset, batch_size=args.batch, num_workers=args.workers, multiprocessing_context="spawn",
                        collate_fn=as_list, prefetch_factor=4)
    iterator = iter(loader)
    first = next(iterator)
    started = time.perf_counter()
    count = 0
    total_bytes = sum(len(x) for x in first)
    for batch in iterator:
        count += len(batch)
        total_bytes += sum(len(x) for x in batch)
    seconds = time.perf_counter() - started
    print(json.dumps({"frames_per_second": count / seconds, "frames": count + len(first), "bytes": total_bytes,
                      "version": getattr(s3torchconnector, "__version__", "?")}))


if __name__ == "__main__":
    main()
