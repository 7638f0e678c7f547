"""1d training step and 1e uploads and orchestration.

1d: images/s of the model in the pipeline's configuration (pokevq's `Trainer`: its step with
autocast as configured, AdamW, the metrics update, TensorBoard logging, fed by the decoded
store in-process) against a plain fp32 eager PyTorch loop (forward, backward, AdamW step) on the
same model and the same batches. On CPU the pipeline runs fp32 eager too, so about 1x is the
honest answer; the GPU settings (bf16 autocast, pinned memory) need a GPU.

1e: wall time of N epochs with the uploads of each epoch (checkpoint published and verified,
TensorBoard files, training log) running on a background thread, overlapping the next epoch as
the flow does, against the same epochs without uploads; and the per-task overhead of the
orchestrator (Prefect tasks on the ephemeral API) against calling the same function directly.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import Row, S3Stack, module_command, ratio_row, run_json

TRAIN_SECTION = "1d training step"
UPLOAD_SECTION = "1e uploads and orchestration"


def _trainer(config: Any, manifest: Any, frames_root: Path, workdir: Path, cache_dir: Path) -> Any:
    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.storage import LocalStorage
    from pokevq.train.trainer import Trainer

    source = FrameSource(LocalStorage(frames_root), FrameCache(cache_dir, max_items=len(manifest) + 16))
    return Trainer(config, manifest, source, workdir)


def _config(**values: Any) -> Any:
    from pokevq.config import TrainConfig

    return TrainConfig.from_dict({"device": "cpu", "num_workers": 0, "val_fraction": 0.0, "seed": 0,
                                  "experiment_name": "bench", **values})


def run_train(frames_root: Path, manifest: Any, *, quick: bool, log: Any) -> tuple[list[Row], dict[str, Any]]:
    import torch

    from pokevq.model.vqvae import VQVAE

    if quick:
        model_options = dict(image_size="72x80", hidden_channels=16, codebook_size=32, embedding_dim=8)
        batch, steps = 8, 3
    else:
        model_options = {}  # the pipeline's default model: 144x160, 128 channels, 512 codes of 64 dims
        batch, steps = 8, 2
    rows_needed = batch * steps
    subset = manifest.head(rows_needed).copy()
    subset["split"] = "train"
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-train-") as directory:
        work = Path(directory)
        config = _config(batch_size=batch, num_epochs=3, output_dir=str(work), **model_options)
        trainer = _trainer(config, subset, frames_root, work / "run", work / "cache")
        log(f"  pipeline: Trainer.train_epoch, {steps} steps of batch {batch} (epoch 1 warms up)")
        trainer.train_epoch(1)  # decodes the frames into the decoded store, warms the allocator
        pipeline_rates = []
        for epoch in (2, 3):
            result = trainer.train_epoch(epoch)
            compute_seconds = rows_needed / result.frames_per_second - result.data_wait_seconds
            pipeline_rates.append(rows_needed / compute_seconds)
        data_wait = result.data_wait_seconds
        images = [batch_.pixels("cpu") for batch_ in trainer.train_loader]
        trainer.close()

        log("  plain fp32 eager loop on the same model and batches")
        torch.manual_seed(0)
        model = VQVAE(trainer.model_config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        model.train()

        def plain_epoch() -> float:
            started = time.perf_counter()
            for x in images:
                out = model(x)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
            return rows_needed / (time.perf_counter() - started)

        plain_epoch()  # warm-up
        plain_rates = [plain_epoch(), plain_epoch()]
    pipeline = max(pipeline_rates)
    plain = max(plain_rates)
    row = ratio_row(TRAIN_SECTION, "pokevq Trainer step (fp32 on CPU)", pipeline, "images/s",
                    "plain fp32 eager PyTorch", plain,
                    note="about 1× expected on CPU: both are fp32 eager; GPU rows need a lent GPU")
    info = {"model": model_options or "default (144x160, hidden 128, codebook 512x64, downsample 8)", "batch": batch,
            "steps_per_epoch": steps, "pipeline_rates": [round(r, 2) for r in pipeline_rates],
            "plain_rates": [round(r, 2) for r in plain_rates], "data_wait_last_epoch_s": data_wait,
            "torch_threads": torch.get_num_threads()}
    return [row], info


# ------------------------------------------------------------------------------ uploads


def run_uploads(stack: S3Stack, frames_root: Path, manifest: Any, *, quick: bool,
                log: Any) -> tuple[list[Row], dict[str, Any]]:
    from pokevq.layout import Layout
    from pokevq.storage import S3Storage
    from pokevq.train.publish import TensorBoardSync, publish_checkpoint, upload_log

    # An N-epoch run: each epoch's uploads overlap the next epoch, the last epoch's are waited for.
    epochs = 2 if quick else 5
    order = ["without", "with"] * (1 if quick else 2)  # alternating, each figure the median of its runs
    # The pipeline's image size and a small model: ~4 s epochs, a ~2 MB checkpoint per epoch.
    options = dict(image_size="72x80" if quick else "144x160", hidden_channels=8 if quick else 32,
                   codebook_size=16 if quick else 64, embedding_dim=4 if quick else 16, batch_size=16,
                   num_epochs=1 + epochs * len(order))
    frames = 32 if quick else 128
    subset = manifest.head(frames).copy()
    subset["split"] = "train"
    timings: dict[str, list[float]] = {"without": [], "with": []}
    upload_seconds: list[float] = []
    upload_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pokevq-bench-uploads-") as directory:
        work = Path(directory)
        config = _config(output_dir=str(work), experiment_name="bench-uploads", **options)
        trainer = _trainer(config, subset, frames_root, work / "run", work / "cache")
        trainer.train_epoch(1)  # warm-up epoch (decoded store, allocator, TensorBoard): not timed
        storage = S3Storage(stack.storage().bucket, "us-east-1", endpoint_url=stack.url)
        layout = Layout.for_config(config)
        tensorboard = TensorBoardSync(trainer.tensorboard_dir, storage, layout.tensorboard)
        log_path = work / "run" / "training.log"
        log_path.write_text("benchmark log line\n" * 500)
        epoch = 1
        for variant in order:
            busy = [0.0, 0.0]

            def publish(result: Any, busy: list[float] = busy) -> None:
                started, cpu = time.perf_counter(), time.thread_time()
                publish_checkpoint(storage, layout, result.checkpoint_path, result.epoch, result.checkpoint_sha256,
                                   result.is_best)
                tensorboard.sync()
                upload_log(storage, layout, log_path)
                busy[0] += time.perf_counter() - started
                busy[1] += time.thread_time() - cpu  # the upload thread's own CPU (the training node's share)

            log(f"  {epochs} epochs of {frames} frames {variant} uploads")
            pending = []
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-upload") as uploads:
                started = time.perf_counter()
                for _ in range(epochs):
                    epoch += 1
                    result = trainer.train_epoch(epoch)
                    if variant == "with":
                        pending.append(uploads.submit(publish, result))
                for future in pending:
                    future.result()
                timings[variant].append(time.perf_counter() - started)
            if variant == "with":
                upload_seconds.append(busy[0])
                upload_cpu.append(busy[1])
        checkpoint_bytes = Path(result.checkpoint_path).stat().st_size
        trainer.close()
    without = statistics.median(timings["without"])
    with_uploads = statistics.median(timings["with"])
    row = ratio_row(UPLOAD_SECTION, f"{epochs} epochs with uploads (background thread)", with_uploads, "s",
                    "the same epochs without uploads", without, higher_is_better=False,
                    note=f"uploads busy {statistics.median(upload_seconds):.2f}s per run (upload thread CPU "
                         f"{1000 * statistics.median(upload_cpu):.0f} ms), overlapped; "
                         "moto and the proxy share the cores")
    row.ratio = with_uploads / without  # a cost: time with / time without
    row.target = "≤1.05× time"
    row.met = row.ratio <= 1.05
    info = {"epochs": epochs, "frames_per_epoch": frames, "model": options, "wall_without_s": timings["without"],
            "wall_with_s": timings["with"], "upload_busy_s": upload_seconds, "upload_thread_cpu_s": upload_cpu,
            "checkpoint_bytes": checkpoint_bytes,
            "epoch_seconds": without / epochs, "order": order}
    return [row], info


def run_orchestration(epoch_seconds: float, *, log: Any) -> tuple[list[Row], dict[str, Any]]:
    log("  Prefect tasks on the ephemeral API vs direct calls (subprocess)")
    result = run_json(module_command("orchestration_overhead", "--tasks", "20"), timeout=300)
    if "error" in result:
        return [Row(UPLOAD_SECTION, "Prefect task overhead", float("nan"), "ms/task", "direct call", None, None, "",
                    None, result["error"][-300:])], result
    per_task_ms = result["per_task_overhead_ms"]
    tasks_per_epoch = 4  # train_epoch + 3 uploads (the uploads overlap the next epoch)
    with_orchestration = epoch_seconds + tasks_per_epoch * per_task_ms / 1000
    row = ratio_row(UPLOAD_SECTION, "epoch with orchestration (4 task runs)", with_orchestration, "s",
                    "epoch as a direct call", epoch_seconds, higher_is_better=False,
                    note=f"{per_task_ms:.1f} ms per task run on the ephemeral API; epoch from the uploads rows")
    row.ratio = with_orchestration / epoch_seconds
    row.target = "(no target)"
    return [row], result
