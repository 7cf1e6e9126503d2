"""The ``correct-shot`` flow: one shot rebuilt from its stored hand corrections, then
its episode finished, as a flow run of its own (named ``ep-<id>-shot-<n>-correct``,
tagged like the shot's runs), so a deployment's UI shows each correction beside the
shot's other runs.

``celmask correct`` stores corrections and applies them in-process (no server to
start: a correction takes a second or two); on a deployment (``correct-shot`` on the
gpu pool, ``deployments/prefect.yaml``), store them the same way and run this flow for
the shot: ``prefect deployment run correct-shot/correct-shot -p episode_dir=... -p shot=N``.
The work is :func:`celmask.tasks.run.correct.apply_stored`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from celmask.tasks.run.correct import apply_stored, check_episode
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import load_plan


def _run_name() -> str:
    p = flow_run.parameters
    return f"ep-{Path(p['episode_dir']).name}-shot-{p['shot']}-correct"


@flow(name="correct-shot", flow_run_name=_run_name)
def correct_shot_flow(episode_dir: str, shot: int, video: str | None = None) -> dict[str, Any]:
    """Apply the stored corrections of ``shot`` of the complete episode ``episode_dir``
    (video: default the one its run recorded) and finish the episode."""
    check_episode(Path(episode_dir))
    plan = load_plan(episode_dir)
    summary = apply_stored(episode_dir, plan.shot(shot), video or plan.video)
    result = finish_episode(episode_dir, plan)
    return {"summary": summary.to_dict(), "complete": result.success is not None, "report": str(result.report)}
