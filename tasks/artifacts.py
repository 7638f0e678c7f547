"""What a flow run shows in the Prefect UI besides its task runs: keyed, described artifacts."""

from __future__ import annotations

import logging
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.runtime import flow_run

log = logging.getLogger(__name__)


def artifact_key(experiment: str, suffix: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    cleaned = "".join(c if c.isalnum() else "-" for c in experiment.lower()).strip("-")
    return f"{cleaned}-{suffix}"[:100]


def percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else round(100.0 * min(done, total) / total, 1)


def _existing_progress() -> UUID | None:
    """This flow run's progress artifact, when an earlier attempt of the run created one."""
    if not flow_run.id:
        return None
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run.id))]),
                type=ArtifactFilterType(any_=["progress"]),
            ),
            limit=1,
        )
    return found[0].id if found else None


def _progress_text(experiment: str, done: int, total: int) -> str:
    return f"Epochs of {experiment}: {done}/{total} done"


def progress_artifact(experiment: str, done: int, total: int) -> UUID:
    """The run's one progress bar of epochs: a retried run moves the bar its first attempt made."""
    existing = _existing_progress()
    if existing is not None:
        advance_progress(existing, experiment, done, total)
        return existing
    return create_progress_artifact(progress=percent(done, total), description=_progress_text(experiment, done, total))


def advance_progress(artifact: UUID, experiment: str, done: int, total: int) -> None:
    update_progress_artifact(artifact, percent(done, total), description=_progress_text(experiment, done, total))
