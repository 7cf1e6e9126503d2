"""Talk to a test's Prefect server from a subprocess (the server's URL in the
environment), printing JSON: Prefect reads its settings once per process, and the
test process itself stays on its own settings.

    python tests/support/prefect_api.py run DEPLOYMENT PARAMS_JSON TIMEOUT   run and wait; the run and its shots
    python tests/support/prefect_api.py submit DEPLOYMENT PARAMS_JSON         start a run, do not wait; its id
    python tests/support/prefect_api.py wait RUN_ID RUN_COUNT TIMEOUT        wait for a run's RUN_COUNT-th attempt to finish
    python tests/support/prefect_api.py scheduled DEPLOYMENT                 scheduled runs of a deployment
    python tests/support/prefect_api.py unschedule DEPLOYMENT                turn its schedules off
    python tests/support/prefect_api.py artifacts                            the latest artifact of each key
    python tests/support/prefect_api.py pools                                work pools, and each deployment's pool and pull steps
    python tests/support/prefect_api.py runs                                 every flow run, with its start and end
    python tests/support/prefect_api.py logs TEXT                            log lines containing TEXT, with their flow run
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterName


def _run(r) -> dict:
    return {
        "id": str(r.id),
        "name": r.name,
        "state": r.state.type.value if r.state else None,
        "message": r.state.message if r.state else None,
        "run_count": r.run_count,
        "tags": sorted(r.tags),
        "expected_start": r.expected_start_time.isoformat() if r.expected_start_time else None,
        "start": r.start_time.isoformat() if r.start_time else None,
        "end": r.end_time.isoformat() if r.end_time else None,
    }


async def run(deployment: str, params: str, timeout: float) -> dict:
    from prefect.deployments import run_deployment

    parent = await run_deployment(deployment, parameters=json.loads(params), timeout=timeout, as_subflow=False)
    async with get_client() as client:
        parent = await client.read_flow_run(parent.id)
        prefix = f"{parent.name}-shot-"
        shots = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix)))
    return {
        "run": _run(parent),
        "shots": sorted((_run(r) for r in shots if r.name.startswith(prefix)), key=lambda r: r["name"]),
    }


async def submit(deployment: str, params: str) -> dict:
    from prefect.deployments import run_deployment

    started = await run_deployment(deployment, parameters=json.loads(params), timeout=0, as_subflow=False)
    return {"id": str(started.id)}


async def wait(run_id: str, run_count: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            r = await client.read_flow_run(UUID(run_id))
            if (r.state and r.state.is_final() and r.run_count >= run_count) or time.monotonic() > deadline:
                return _run(r)
            await asyncio.sleep(1)


async def scheduled(deployment: str) -> dict:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
        )
    return {"runs": [_run(r) for r in runs if r.state and r.state.is_scheduled()]}


async def unschedule(deployment: str) -> dict:
    """Turn the deployment's schedules off (Prefect deletes the runs they made for later)."""
    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        for schedule in found.schedules:
            await client.update_deployment_schedule(found.id, schedule.id, active=False)
    return {"schedules": len(found.schedules)}


async def artifacts() -> dict:
    async with get_client() as client:
        found = await client.read_latest_artifacts()
    return {
        a.key: {"type": a.type, "data": a.data if isinstance(a.data, (str, float, int, list)) else str(a.data)}
        for a in found
        if a.key
    }


async def pools() -> dict:
    async with get_client() as client:
        found = await client.read_work_pools()
        deployments = await client.read_deployments()
    return {
        "pools": {p.name: {"type": p.type, "base_job_template": p.base_job_template} for p in found},
        "deployments": {d.name: {"pool": d.work_pool_name, "pull_steps": d.pull_steps} for d in deployments},
    }


async def runs() -> dict:
    """Every flow run, with the times of each state it went through."""
    async with get_client() as client:
        found = await client.read_flow_runs(limit=200)
        states = [await client.read_flow_run_states(r.id) for r in found]
    return {
        "runs": [
            {**_run(r), "states": [[s.type.value, s.timestamp.isoformat()] for s in history]}
            for r, history in zip(found, states, strict=True)
        ]
    }


async def logs(text: str) -> dict:
    from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch

    async with get_client() as client:
        found = await client.read_logs(LogFilter(text=LogFilterTextSearch(query=text)), limit=200)
    return {"logs": [{"flow_run_id": str(g.flow_run_id), "message": g.message} for g in found if text in g.message]}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "run":
        out = asyncio.run(run(args[0], args[1], float(args[2])))
    elif command == "submit":
        out = asyncio.run(submit(args[0], args[1]))
    elif command == "wait":
        out = asyncio.run(wait(args[0], int(args[1]), float(args[2])))
    elif command == "unschedule":
        out = asyncio.run(unschedule(args[0]))
    elif command == "artifacts":
        out = asyncio.run(artifacts())
    elif command == "pools":
        out = asyncio.run(pools())
    elif command == "runs":
        out = asyncio.run(runs())
    elif command == "logs":
        out = asyncio.run(logs(args[0]))
    else:
        out = asyncio.run(scheduled(args[0]))
    print(json.dumps(out))
