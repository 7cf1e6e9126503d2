"""Major 8 of issue 13: when every shot fails the cause reaches the user, not "holds no
episodes (no shots/ folder)" from the report of an episode that has no shot file."""

from __future__ import annotations

import pytest

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import plan_episode
from celmask.tasks.run.shot import Faults, run_shot
from tests.support.finished import celmask, one_line_error

pytestmark = pytest.mark.faults


def test_an_episode_whose_every_shot_failed_is_finished_with_the_reasons(finished, tmp_path):
    episode = tmp_path / "out" / "ep"
    plan, _ = plan_episode(finished.video, episode, finished.settings)
    for shot in plan.shots:
        with pytest.raises(CelmaskError, match="injected failure"):
            run_shot(finished.video, shot, episode, finished.settings, faults=Faults(shots=(0, 1)))
    result = finish_episode(episode, plan)
    assert result.failed == [0, 1] and result.success is None
    assert all("injected failure" in s.error for s in result.summaries)
    assert result.report.is_file() and "injected failure" in result.report.read_text()


@pytest.mark.slow
def test_run_says_why_every_shot_failed(finished, env, tmp_path):
    done = celmask(
        env, "run", finished.video, "--out", tmp_path / "out", "--set", "work_size=320", "--fail-shots", "0,1"
    )
    assert done.returncode == 1
    line = one_line_error(done)
    assert "shots [0, 1] of 2 failed, so none is written (first failure: shot 0: injected failure" in line, line
