"""The demo: the whole pipeline on the embedded default (local S3, synthetic frames, CPU).

Starts a local S3 endpoint, makes and uploads synthetic frames, runs the `pokevq`
flow with --use-s3, copies the outputs to a local folder and stops the endpoint.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

from pokevq.config import TrainConfig
from pokevq.storage import S3Storage
from pokevq.storage.local_server import LocalS3Server

log = logging.getLogger(__name__)

DEMO_BUCKET = "pokevq-demo"
# The default model is fitted by seeding its codebook from the training frames before the first step; its
# epochs measure it, so two show the curve without costing the demo's few minutes.
DEMO_EPOCHS = 2


def _copy_outputs(storage: S3Storage, experiment: str, out: Path) -> None:
    for prefix in ("checkpoints", "tensorboard", "logs", "reports", "manifests"):
        for info in storage.list(f"{prefix}/{experiment}/"):
            storage.download_file(info.key, out / info.key)


def run_demo(epochs: int = DEMO_EPOCHS, out: str | Path = "./demo_outputs", debug: bool = False) -> dict:
    from flows.pokevq_flow import train
    from pokevq.data.upload_frames import upload_directory
    from pokevq.synth.generate import generate_dataset

    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    experiment = datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    # The local endpoint accepts any key; never send a user's real AWS keys to it.
    os.environ.update(AWS_ACCESS_KEY_ID="pokevq-demo", AWS_SECRET_ACCESS_KEY="pokevq-demo-secret")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    with tempfile.TemporaryDirectory(prefix="pokevq-demo-") as scratch, LocalS3Server(
        log_path=Path(scratch) / "moto.log"
    ) as server:
        print(f"Local S3 endpoint at {server.endpoint_url}")
        storage = S3Storage(DEMO_BUCKET, "us-east-1", server.endpoint_url)
        storage.client.create_bucket(Bucket=DEMO_BUCKET)
        frames_dir = Path(scratch) / "frames"
        frames = generate_dataset(frames_dir, games=2, episodes=4, frames=50, seed=0)
        print(f"Made {len(frames)} synthetic Game Boy frames")
        base = TrainConfig(use_s3=True, s3_bucket=DEMO_BUCKET, s3_endpoint_url=server.endpoint_url)
        upload_directory(frames_dir, base.storage, threads=8)
        config = base.replace(
            experiment_name=experiment,
            num_epochs=epochs,
            batch_size=8,
            num_workers=0,
            output_dir=str(out),
            local_cache_dir=str(Path(scratch) / "cache"),
            debug=debug,
            no_fallback=True,
        )
        summary = train(config)
        _copy_outputs(storage, experiment, out / "s3")
    seconds = time.perf_counter() - started
    final = (summary.get("final") or {}).get("val") or {}
    print()
    epochs = summary["epochs_trained"]
    print(f"Demo finished in {seconds:.0f}s: {epochs} epoch{'s' if epochs != 1 else ''}, "
          f"validation PSNR {final.get('psnr', 0):.2f} dB, pixel accuracy {100 * final.get('pixel_accuracy', 0):.2f}%, "
          f"{round(final.get('codebook_usage', 0) * config.model.codebook_size)} codes used for "
          f"{final.get('data_tiles', 0)} distinct tiles.")
    print(f"Everything the run wrote to s3://{DEMO_BUCKET}/ was copied to {out / 's3'}:")
    for prefix in ("checkpoints", "tensorboard", "logs", "reports"):
        print(f"  {prefix + ':':<13} {out / 's3' / prefix / experiment}")
    print(f"Open the report:   {out / 's3' / 'reports' / experiment / 'report.md'}")
    print(f"Watch the curves:  tensorboard --logdir {out / 's3' / 'tensorboard'}")
    return summary
