"""Critical 1 and Major 3 of issue 13: a recompute that fails, is interrupted or is
killed never costs the good shot file and never leaves ``_SUCCESS.json`` (or the
episode table) describing files that are not there."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import episode_table, success_path, summary_path
from celmask.tasks.manifest.validate import validate
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import load_plan
from celmask.tasks.run.shot import read_summary, run_shot
from tests.support.finished import CELMASK, EPISODE, celmask, one_line_error, shot_bytes

pytestmark = pytest.mark.faults


def problems(path) -> list[str]:
    return [str(p) for p in validate(path).problems]


def test_a_failed_recompute_keeps_the_good_file_and_withdraws_the_claims(finished, out, tmp_path):
    episode = out / EPISODE
    plan = load_plan(episode)
    bad = {**finished.settings, "detector.weights": str(tmp_path / "missing.pt")}
    with pytest.raises(CelmaskError, match="detector weights not found"):
        run_shot(finished.video, plan.shots[0], episode, bad, force=True)
    assert shot_bytes(episode) == finished.shots  # the good file is still there, untouched
    assert not success_path(episode).exists() and not episode_table(episode).exists()
    assert read_summary(episode, plan.shots[0]).status == "failed"

    result = finish_episode(episode, plan)  # what `rerun` does after a failure
    assert result.success is None and result.failed == [0]
    assert not success_path(episode).exists()
    assert any("no _SUCCESS.json" in p for p in problems(out))

    run_shot(finished.video, plan.shots[0], episode, finished.settings, force=True)
    assert finish_episode(episode, plan).success is not None
    assert shot_bytes(episode) == finished.shots and problems(out) == []


def test_a_changed_setting_stopped_after_one_shot_leaves_no_success(finished, out):
    """Major 3: the first recomputed shot withdraws the claims, and a stale
    ``_SUCCESS.json`` put back is caught by validate (its config hashes)."""
    episode = out / EPISODE
    plan = load_plan(episode)
    stale = success_path(episode).read_bytes()
    run_shot(finished.video, plan.shots[0], episode, {**finished.settings, "refiner": "none"})  # then the run dies
    assert not success_path(episode).exists() and not episode_table(episode).exists()
    assert any("no _SUCCESS.json" in p for p in problems(out))
    success_path(episode).write_bytes(stale)
    assert any("disagrees with the shot files" in p and "config_hashes" in p for p in problems(out))


@pytest.mark.slow
def test_a_failed_rerun_command_keeps_the_good_file(finished, out, env, tmp_path):
    """The audit's `rerun --shot 0` with a setting that fails inside the shot."""
    episode = out / EPISODE
    done = celmask(env, "rerun", episode, "--shot", "0", "--set", f"detector.weights={tmp_path / 'missing.pt'}")
    assert done.returncode == 2
    assert "detector weights not found" in one_line_error(done)
    assert "1 of 2 shots good; not complete (shots [0] failed)" in done.stdout  # finished again, truthfully
    assert shot_bytes(episode) == finished.shots
    assert not success_path(episode).exists()
    assert [s.status for s in finish_episode(episode, load_plan(episode)).summaries] == ["failed", "ok"]


@pytest.mark.slow
def test_ctrl_c_during_a_rerun_leaves_a_plainly_incomplete_episode(finished, out, env):
    episode = out / EPISODE
    plan = load_plan(episode)
    summary = summary_path(episode, 1)
    command = subprocess.Popen(
        # detection at 1280 px keeps the recompute busy for seconds, so the interrupt lands inside it
        [CELMASK, "rerun", str(episode), "--shot", "1", "--set", "refiner=none", "--set", "detector.imgsz=1280"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while summary.exists() and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the shot withdraws the claims as its recompute starts
    assert command.poll() is None and not summary.exists(), "the rerun never started recomputing"
    time.sleep(0.2)
    command.send_signal(signal.SIGINT)
    stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 130, stderr[-4000:]
    assert not success_path(episode).exists() and not episode_table(episode).exists()
    files = shot_bytes(episode)
    assert files.keys() == finished.shots.keys() and files["shot_0000.parquet"] == finished.shots["shot_0000.parquet"]
    assert not list((episode / "shots").glob(".*"))  # no partial file left
    left = problems(out)
    assert left and all("no _SUCCESS.json" in p for p in left), left  # every file there is whole and valid

    run_shot(finished.video, plan.shots[1], episode, finished.settings)  # the re-run completes
    success = finish_episode(episode, plan).success
    assert success is not None and json.loads(success_path(episode).read_text()) == success
    assert shot_bytes(episode) == finished.shots and problems(out) == []
