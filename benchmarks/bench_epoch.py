"""1b warm epoch: frames/s delivered as training-ready batches once the cache is full.

pokevq's data path (`BucketReader.loader`, the trainer's loader) against a plain DataLoader decoding
the same PNGs with Pillow from a local folder, same worker count, batch size, shuffling and
loader options. Each is timed on its second epoch (workers started, files in the page cache);
pokevq's first epoch (which fetches the frames and keeps them as decoded units) is reported too.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, S3Stack, ratio_row

SECTION = "1b warm epoch"


class PillowFolder:
    """The baseline: PNG files from a local folder, decoded with Pillow on every read."""

    def __init__(self, files: list[Path], image_size: tuple[int, int]) -> None:
        self.files = [str(f) for f in files]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        import torch
        from PIL import Image

        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
            h, w = self.image_size
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy(np.ascontiguousarray(array))


def epoch_rate(loader: Any, frames: int, after_first_batch: bool = False) -> float:
    """Frames/s of one epoch; `after_first_batch` leaves out worker start-up (a first epoch)."""
    started = time.perf_counter()
    count = timed = 0
    for batch in loader:
        images = getattr(batch, "images", batch)
        size = 0 if images is None else int(images.shape[0])
        count += size
        if after_first_batch and count == size:
            started = time.perf_counter()
            continue
        timed += size
    seconds = time.perf_counter() - started
    assert count == frames, (count, frames)
    return timed / seconds


def shutdown(loader: Any) -> None:
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def run(stack: S3Stack, manifest: Any, files: list[Path], *, workers: int, batch: int,
        image_size: tuple[int, int], log: Any, quick: bool = False) -> tuple[list[Row], dict[str, Any]]:
    import statistics

    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from pokevq.data import BucketReader, FrameSource
    from pokevq.data.cache import FrameCache

    frames = len(manifest)
    rounds = 1 if quick else 3
    options = dict(num_workers=workers, multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=4)
    base_loader = DataLoader(PillowFolder(files, image_size), batch_size=batch,
                             sampler=RandomSampler(range(len(files)), generator=torch.Generator().manual_seed(0)),
                             **options)
    loaders: list[Any] = [base_loader]
    runs: dict[str, list[float]] = {"baseline": [], "decoded": []}
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-epoch-") as directory:
        try:
            cache = FrameCache(directory, max_items=frames + 16)
            source = FrameSource(stack.storage(), cache)
            log(f"  baseline: DataLoader + Pillow over {len(files)} local PNGs ({workers} workers): first epoch")
            epoch_rate(base_loader, len(files))  # workers started, files in the page cache
            path = BucketReader.decide(manifest, source, max_bytes=None)
            loader = path.loader(manifest, source, image_size, batch_size=batch, shuffle=True, seed=0,
                                 num_workers=workers, pin_memory=False)
            loaders.append(loader)
            log("  pokevq data path: first epoch (fetches and decodes in the workers, keeps decoded units)")
            loader.set_epoch(1)
            first = epoch_rate(loader, frames, after_first_batch=True)
            for round_ in range(rounds):  # alternate, so a load spike on the shared machine hits both
                log(f"  epochs: baseline, pokevq (decoded units) (round {round_ + 1}/{rounds})")
                runs["baseline"].append(epoch_rate(base_loader, len(files)))
                loader.set_epoch(2 + round_)
                runs["decoded"].append(epoch_rate(loader, frames))
            cache.close()
        finally:
            for item in loaders:
                shutdown(item)

    baseline = statistics.median(runs["baseline"])
    base_name = f"DataLoader + Pillow, local PNGs ({workers} workers)"
    rows = [
        ratio_row(SECTION, f"pokevq data path, decoded units ({workers} workers)", statistics.median(runs["decoded"]),
                  "frames/s", base_name, baseline, target=3),
        ratio_row(SECTION, f"pokevq first epoch, keeping decoded units ({workers} workers)", first, "frames/s",
                  base_name, baseline, note="decodes every PNG once"),
    ]
    info = {"frames": frames, "workers": workers, "batch": batch, "image_size": f"{image_size[0]}x{image_size[1]}",
            "rounds": {k: [round(x) for x in v] for k, v in runs.items()}, "first_epoch": round(first)}
    return rows, info
