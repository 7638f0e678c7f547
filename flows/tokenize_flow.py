"""The `pokevq-tokenize` flow: validate storage → load the tokenizer → index frames → tokenize → index and report."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.parameters import config_parameters
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
@config_parameters(TokenizeConfig)
def pokevq_tokenize(**options: Any) -> dict[str, Any]:
    """Tokenize every episode under `frames_dir` with `checkpoint` into tokens/<experiment>/<sha256[:12]>/."""
    parameters = dict(options)
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
