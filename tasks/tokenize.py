"""The tokenize flow's steps: thin tasks over `pokevq.tokenizer.job.TokenizeSession`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pokevq.tokenizer.job import TokenizeSession, report_markdown
from tasks.artifacts import artifact_key
from tasks.common import IO_RETRY, retry_unless_unreachable


@task(name="validate_storage", task_run_name="validate_storage", cache_policy=NO_CACHE,
      **(IO_RETRY | dict(retry_condition_fn=retry_unless_unreachable)))
def validate_storage(session: TokenizeSession) -> dict[str, Any]:
    """Credentials, bucket, permissions and frames, as a training run checks them (never falls back)."""
    return session.validate().to_dict()


@task(name="load_tokenizer", task_run_name="load_tokenizer", cache_policy=NO_CACHE, **IO_RETRY)
def load_tokenizer(session: TokenizeSession, plan: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint, verified against its SHA-256 and loaded without pickle; returns its lineage."""
    return session.load()


@task(name="index_frames", task_run_name="index_frames", cache_policy=NO_CACHE, **IO_RETRY)
def index_frames_task(session: TokenizeSession, plan: dict[str, Any]) -> dict[str, Any]:
    """Every frame under the frames prefix, by game and episode."""
    return session.index()


@task(name="tokenize_episodes", task_run_name="tokenize_episodes", cache_policy=NO_CACHE, **IO_RETRY)
def tokenize_episodes(session: TokenizeSession, lineage: dict[str, Any], indexed: dict[str, Any]) -> dict[str, Any]:
    """One token file per episode; episodes this checkpoint already wrote are skipped, so a retry continues."""
    return session.tokenize().to_dict()


@task(name="write_token_index", task_run_name="write_token_index", cache_policy=NO_CACHE, **IO_RETRY)
def write_token_index(session: TokenizeSession, result: dict[str, Any], indexed: dict[str, Any],
                      lineage: dict[str, Any]) -> dict[str, Any]:
    """index.parquet and lineage.json of the token set, and the report as a Prefect artifact."""
    written = session.finish(indexed)
    create_markdown_artifact(report_markdown(result, written, lineage),
                             key=artifact_key(str(lineage.get("experiment")), "tokens"),
                             description="Tokens written by pokevq-tokenize")
    return written
