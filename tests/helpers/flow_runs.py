"""A flow run's task states, and retrying it the way the UI's Retry button and a worker do."""

from __future__ import annotations

from flows import pokevq


def task_states(flow_run_id) -> dict[str, list[str]]:
    """Every task run's final state name, per task run name, in creation order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)
    states: dict[str, list[str]] = {}
    for run in sorted(runs, key=lambda r: r.created):
        states.setdefault(run.name, []).append(run.state_name)
    return states


def retry_flow_run(flow_run_id):
    """What the UI's Retry button and a worker do: AwaitingRetry, then the engine runs the same flow run."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import AwaitingRetry

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        flow_run = client.read_flow_run(flow_run_id)
    return run_flow(pokevq, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
