"""Minor findings of issue 13 that gave tracebacks or were let through: odd episode ids,
``--config DIR``, a ``plan.json`` with wrong types, an unreachable ``PREFECT_API_URL``;
and temporary files killed writers left behind, removed by the next command."""

from __future__ import annotations

import json

import pytest

from celmask.tasks.manifest.layout import plan_path, success_path
from celmask.tasks.manifest.validate import validate
from tests.faults.commands import leftovers, run_args
from tests.support.finished import EPISODE, celmask, one_line_error, shot_bytes

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(
    ("episode_id", "problem"),
    [
        ("x" * 300, "is 300 bytes long, at most 200"),
        ("   ", "must be a plain directory name"),
        ("a\\b", "must be a plain directory name"),
        ("a/b", "must be a plain directory name"),
        (" ep", "must be a plain directory name"),
        ("tab\there", "must be a plain directory name"),
    ],
)
def test_odd_episode_ids_are_one_line(finished, tmp_path, env, episode_id, problem):
    out = tmp_path / "out"
    done = celmask(env, "run", finished.video, "--out", out, "--episode-id", episode_id)
    assert done.returncode == 2 and problem in one_line_error(done)
    assert not out.exists()


def test_a_directory_as_config_is_one_line(tmp_path, env):
    done = celmask(env, "config", "--config", tmp_path)
    assert done.returncode == 2
    assert one_line_error(done) == (
        f"celmask: error: {tmp_path}: cannot be read as a config file (Is a directory); "
        "pass a readable TOML file to --config"
    )


@pytest.mark.parametrize("damage", [{"shots": 5}, {"shots": [{"index": "x"}]}, {"size": None}, []])
def test_a_plan_with_wrong_types_is_one_line(out, env, damage):
    episode = out / EPISODE
    plan = json.loads(plan_path(episode).read_text())
    plan_path(episode).write_text(json.dumps({**plan, **damage} if isinstance(damage, dict) else damage))
    done = celmask(env, "finalize", episode)
    assert done.returncode == 2
    assert f"{plan_path(episode)}: not a plan celmask wrote" in one_line_error(done)
    assert success_path(episode).exists()  # nothing was touched


def test_an_unreachable_prefect_api_is_one_line(finished, out, env):
    done = celmask({**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}, *run_args(finished, out))
    assert done.returncode == 2
    assert "PREFECT_API_URL http://127.0.0.1:9/api: the Prefect server does not answer" in one_line_error(done)


def test_what_killed_writers_left_is_removed_by_the_next_command(finished, out, env):
    episode = out / EPISODE
    dead = 2**22 + 1  # above the kernel's pid_max default: no such process
    left = [
        episode / "shots" / f".shot_0000.parquet.{dead}-0123abcd.partial",
        episode / f"._SUCCESS.json.{dead}-89abcdef.partial",
        episode / f".report.{dead}-00000000.old",
    ]
    for path in left[:2]:
        path.write_bytes(b"half")
    left[2].mkdir()
    assert leftovers(episode)
    done = celmask(env, "finalize", episode)
    assert done.returncode == 0, done.stderr
    assert leftovers(episode) == [] and shot_bytes(episode) == finished.shots and validate(out).problems == []
