"""Major 9 of issue 13: ``.`` (or ``..``) as the episode directory. An episode's id is
its directory's name, which ``.`` does not show: every command resolves its paths
before use, so ``finalize .`` keeps a valid ``_SUCCESS.json``, ``validate .`` finds
no false problems and ``report .`` / ``export .`` name the episode."""

from __future__ import annotations

import json

import pytest

from celmask.tasks.manifest.layout import success_path
from tests.support.finished import EPISODE, celmask

pytestmark = pytest.mark.faults


@pytest.mark.slow
def test_dot_is_the_episode_it_names(out, env):
    episode = out / EPISODE
    before = json.loads(success_path(episode).read_text())

    done = celmask(env, "finalize", ".", cwd=episode)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(success_path(episode).read_text()) == before  # still there, and the same

    for place, arg in ((episode, "."), (episode / "shots", "..")):
        done = celmask(env, "validate", arg, cwd=place)
        assert done.returncode == 0 and done.stdout.strip().endswith("no problems"), done.stdout

    done = celmask(env, "report", ".", cwd=episode)
    assert done.returncode == 0 and done.stdout.strip() == str(episode / "_report" / "index.html"), done.stderr
    assert f"celmask QC: {EPISODE}<" in (episode / "_report" / "index.html").read_text()

    done = celmask(env, "export", ".", "--format", "coco", cwd=episode)
    assert done.returncode == 0 and done.stdout.startswith(f"{EPISODE}: wrote {episode / '_exports' / 'coco'}"), (
        done.stdout + done.stderr
    )
