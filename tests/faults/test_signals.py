"""Majors 4 and 5 of issue 13: Ctrl-C (SIGINT), SIGTERM and SIGKILL at several moments.
A signalled command stops within seconds with one line and exit status 130 (SIGINT) or
143 (SIGTERM); whatever kills it, no process of it is left (the embedded Prefect server
ends with it), nothing is half-written, the episode is whole and valid or plainly
incomplete, a re-run gives the same bytes, and the killed run's flow run is marked
crashed by the next command."""

from __future__ import annotations

import signal
import time

import pytest

from celmask.tasks.manifest.layout import success_path
from celmask.tasks.manifest.validate import validate
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import load_plan
from celmask.tasks.run.shot import run_shot
from tests.faults.commands import (
    SLOW_DETECTION,
    flow_runs,
    leftovers,
    none_left,
    recomputing,
    run_args,
    session_processes,
    start,
    wait_for,
)
from tests.faults.conftest import SLOW_MACHINE
from tests.support.finished import EPISODE, celmask, shot_bytes
from tests.support.prefect_server import command_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

STOP_SECONDS = 10.0
"""How soon a signalled command must have ended (it waits for no shot)."""


def stop(command, sig: signal.Signals) -> str:
    """Send ``sig``; the command's stderr once it ended, promptly, with 128 + the signal."""
    began = time.monotonic()
    command.send_signal(sig)
    _, stderr = command.communicate(timeout=60)
    assert time.monotonic() - began < STOP_SECONDS, f"took {time.monotonic() - began:.1f} s"
    assert command.returncode == 128 + sig, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("    ")]
    assert lines == [f"celmask: stopped by {sig.name}; files being written were discarded"], stderr[-3000:]
    assert none_left(command.pid) == []
    return stderr


def problems(out) -> list[str]:
    return [str(p) for p in validate(out).problems]


@pytest.mark.parametrize(
    ("command", "sig"),
    [("run", signal.SIGINT), ("run", signal.SIGTERM), ("rerun", signal.SIGTERM)],
)
def test_a_signal_during_a_recompute_stops_it_and_leaves_a_plainly_incomplete_episode(finished, out, env, command, sig):
    episode = out / EPISODE
    args = (
        run_args(finished, out, *SLOW_DETECTION)
        if command == "run"
        else ["rerun", episode, "--shot", "1", *SLOW_DETECTION]
    )
    running = start(env, *args)
    wait_for("a recompute", recomputing(episode), running)
    time.sleep(0.5)
    stop(running, sig)
    assert not success_path(episode).exists() and leftovers(episode) == []
    left = problems(out)
    assert left and all("no _SUCCESS.json" in p for p in left), left  # every file there is whole and valid

    plan = load_plan(episode)  # the re-run
    for shot in plan.shots:
        run_shot(finished.video, shot, episode, finished.settings)
    assert finish_episode(episode, plan).success is not None
    assert shot_bytes(episode) == finished.shots and problems(out) == []


def test_ctrl_c_while_the_server_starts_keeps_the_finished_episode(finished, out, env):
    running = start(env, *run_args(finished, out))
    wait_for("the embedded server", lambda: any("server_child" in p for p in session_processes(running.pid)), running)
    stop(running, signal.SIGINT)
    episode = out / EPISODE
    assert success_path(episode).exists() and problems(out) == [] and shot_bytes(episode) == finished.shots


def test_sigkill_leaves_no_server_and_the_next_run_marks_its_run_crashed(finished, out, tmp_path):
    env = {**command_env(tmp_path / "prefect"), **SLOW_MACHINE}  # a database of its own, to count its runs
    episode = out / EPISODE
    running = start(env, *run_args(finished, out, *SLOW_DETECTION))
    wait_for("a recompute", recomputing(episode), running)
    assert any("server_child" in p for p in session_processes(running.pid))
    running.send_signal(signal.SIGKILL)
    running.communicate()
    assert none_left(running.pid, within=10) == []  # the server saw its parent go
    assert flow_runs(env) == [(f"ep-{EPISODE}", "RUNNING")]  # what the kill left in the database

    done = celmask(env, *run_args(finished, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert shot_bytes(episode) == finished.shots and leftovers(episode) == [] and problems(out) == []
    assert flow_runs(env) == [(f"ep-{EPISODE}", "COMPLETED"), (f"ep-{EPISODE}", "CRASHED")]
