"""The dependency pins hold: a real Prefect server starts, and its scheduler
creates cron runs (fastapi >= 0.155 breaks start-up; SQLAlchemy 2.1 silently
breaks the scheduler -- ../shared/notes/prefect.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support.prefect_server import running_server, server_env

pytestmark = pytest.mark.slow

CHECK_SCHEDULED_RUNS = textwrap.dedent(
    """
    import asyncio, sys, time
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import CronSchedule

    async def main() -> int:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("pin-check")
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                name="every-minute",
                schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron="* * * * *", timezone="Asia/Tokyo"), active=True)],
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
                scheduled = [r for r in runs if r.state and r.state.is_scheduled()]
                if scheduled:
                    print(f"scheduled runs: {len(scheduled)}")
                    return 0
                await asyncio.sleep(1)
            print("no scheduled runs within 60 s", file=sys.stderr)
            return 1

    sys.exit(asyncio.run(main()))
    """
)


def test_server_starts_and_schedules_cron_runs(tmp_path):
    with running_server(tmp_path) as api_url:
        done = subprocess.run(
            [sys.executable, "-c", CHECK_SCHEDULED_RUNS],
            env=server_env(tmp_path, api_url),
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scheduled runs:" in done.stdout
