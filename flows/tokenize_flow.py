"""The `pokevq-tokenize` flow: validate storage → load the tokenizer → index frames → tokenize → index and report."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.runtime import load_bucket_block, temporary_server_patience
from pokevq import settings
from pokevq.run.logs import CONSOLE
from pokevq.tokenizer.job import TokenizeConfig, TokenizeSession
from tasks.tokenize import (
    index_frames_task,
    load_tokenizer,
    tokenize_episodes,
    validate_storage,
    write_token_index,
)


@flow(name="pokevq-tokenize", description="Encode every frame of a bucket to tokens with a trained pokevq checkpoint.")
def pokevq_tokenize(
    checkpoint: str,
    use_s3: bool = False,
    s3_bucket: str | None = None,
    s3_region: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_sse: str | None = None,
    s3_kms_key_id: str | None = None,
    expected_bucket_owner: str | None = None,
    frames_dir: str = "pokemon_frames",
    output_dir: str = "./outputs",
    local_cache_dir: str | None = None,
    max_cache_bytes: int | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str = "auto",
    bf16: bool = False,
    debug: bool = False,
) -> dict[str, Any]:
    """Tokenize every episode under `frames_dir` with `checkpoint` into tokens/<experiment>/<sha256[:12]>/.

    Args:
        checkpoint: The checkpoint: s3://bucket/checkpoints/<experiment>/checkpoint_best.pt or a local path.
        use_s3: Read frames from S3 and write tokens there.
        s3_bucket: S3 bucket name (default: $S3_BUCKET_NAME).
        s3_region: AWS region (default: $AWS_REGION, else us-east-1).
        s3_endpoint_url: S3 endpoint for MinIO, R2 or a local server.
        s3_sse: Server-side encryption of the tokens it writes: AES256 or aws:kms.
        s3_kms_key_id: KMS key for s3_sse aws:kms.
        expected_bucket_owner: Account id that must own the bucket (every request is refused otherwise).
        frames_dir: S3 prefix of the frames (a local folder without use_s3).
        output_dir: Root of local outputs (the tokens too without use_s3).
        local_cache_dir: Local cache directory for the streamed shards.
        max_cache_bytes: Byte limit of that cache.
        batch_size: Frames encoded at once.
        num_workers: DataLoader worker processes reading frames (default: none on the CPU, where the model needs
                    the cores; up to 8 with a GPU).
        device: auto (CUDA when present), cpu or cuda.
        bf16: Encode in bf16 autocast (CUDA only).
        debug: Debug logging and tracebacks.
    """
    parameters = dict(locals())
    settings.check_run_knobs()  # a bad POKEVQ_* value stops the run before anything starts
    block = load_bucket_block()
    if block is not None:
        block.fill(parameters)
    config = TokenizeConfig.from_dict(parameters)
    with TokenizeSession(config, block.credentials if block is not None else None) as session:
        plan = validate_storage(session)
        lineage = load_tokenizer(session, plan)
        indexed = index_frames_task(session, plan)
        result = tokenize_episodes(session, lineage, indexed)
        written = write_token_index(session, result, indexed, lineage)
        get_run_logger().info("Tokenized %d frames (%d episodes written, %d already there) at %.1f frames/s into %s",
                              result["frames"], result["episodes_written"], result["episodes_skipped"],
                              result["frames_per_second"], result["token_set"], extra=CONSOLE)
        return {**result, **written, "lineage_of": lineage}


def tokenize(config: TokenizeConfig) -> dict[str, Any]:
    """Run the `pokevq-tokenize` flow from Python."""
    with temporary_server_patience():
        return pokevq_tokenize(**config.to_dict())
