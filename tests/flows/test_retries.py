"""Transient shot faults are retried with backoff, and the retries are real: counted
in Prefect's own database, not inferred from the outcome.

A script runs the episode flow's shot task in a flow of its own on the embedded API
(``local_prefect``), with the production retry policy but delays of a second, shot 0
failing transiently on two attempts (the third succeeds) and shot 1 on three (the
last attempt fails the shot). It prints what Prefect recorded for each task run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from celmask.flows.episode import SHOT_RETRIES, SHOT_RETRY_DELAYS, shot_task
from tests.support.prefect_server import command_env

SCRIPT = r"""
import json, sys
from pathlib import Path
from prefect import flow
from prefect.client.orchestration import get_client
from celmask.flows.embedded import local_prefect
from celmask.flows.episode import shot_task
from celmask.tasks.run.plan import plan_episode

video, episode, settings = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
plan, _ = plan_episode(video, episode, settings)
quick = shot_task.with_options(retry_delay_seconds=[1.0, 2.0], retry_jitter_factor=None)

@flow
def rehearse():
    out = {}
    for index, attempts in ((0, 2), (1, 3)):
        faults = {"shots": [index], "attempts": attempts, "transient": True}
        state = quick(str(video), plan.shots[index], str(episode), settings, faults=faults, return_state=True)
        out[index] = str(state.state_details.task_run_id)
    return out

with local_prefect():
    ids = rehearse()
    with get_client(sync_client=True) as client:
        for index, run_id in ids.items():
            run = client.read_task_run(run_id)
            states = client.read_task_run_states(run_id)
            print(json.dumps({
                "shot": index, "run_count": run.run_count, "final": run.state.type.value,
                "states": [(s.name, s.timestamp.timestamp()) for s in states],
            }))
"""


def test_the_shot_task_declares_two_retries_with_backoff():
    assert shot_task.retries == SHOT_RETRIES == 2 == len(SHOT_RETRY_DELAYS)
    assert SHOT_RETRY_DELAYS == sorted(SHOT_RETRY_DELAYS) and shot_task.retry_jitter_factor == 0.5


@pytest.mark.slow
def test_transient_faults_are_retried_twice_with_backoff_then_fail(finished, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished.out, out)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(finished.video), str(out / "ep"), json.dumps(finished.settings)],
        env=command_env(tmp_path / "prefect"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {r["shot"]: r for r in map(json.loads, done.stdout.strip().splitlines())}
    for shot, final in ((0, "COMPLETED"), (1, "FAILED")):
        run = runs[shot]
        assert run["run_count"] == 3 and run["final"] == final, run  # the first try and two retries
        names = [name for name, _ in run["states"]]
        assert names.count("AwaitingRetry") == 2 and names.count("Retrying") == 2, names
        retries = [t for name, t in run["states"] if name == "Retrying"]
        waits = [t for name, t in run["states"] if name == "AwaitingRetry"]
        assert all(r - w >= delay * 0.9 for w, r, delay in zip(waits, retries, (1.0, 2.0))), run["states"]
