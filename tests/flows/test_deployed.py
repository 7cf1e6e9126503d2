"""The deployed mode end to end, on a real Prefect server started here on 127.0.0.1:
``celmask deploy`` (pools, the gpu limit, deployments from deployments/prefect.yaml),
one process worker per pool, the ``episode`` deployment with one shot made to fail and
another's process made to crash (submitted again by the episode, once its gpu slot's
lease runs out), the failed shot's flow run retried alone, the episode finished, and
the manifest equal to an embedded run's byte for byte. Also: the nightly cron creates
its 02:00 runs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from celmask.tasks.manifest.layout import SUCCESS_NAME
from celmask.tasks.manifest.schema import read_episode_table, shot_files
from tests.support.prefect_server import (
    PREFECT,
    call_api,
    run,
    running_server,
    server_env,
    start_worker,
    stop_process_group,
)

pytestmark = pytest.mark.slow

CELMASK = str(Path(sys.executable).with_name("celmask"))
SETTINGS = {"work_size": 480}
"""Smaller working frames keep the test quick; both runs use the same."""
FAILING_SHOT = 1
CRASHING_SHOT = 0
"""Its first flow run's process ends mid-shot, holding the gpu slot, as when a worker is lost."""


@pytest.fixture(scope="module")
def episode_video(tmp_path_factory) -> Path:
    from celmask.tasks.synth import generate_episode

    root = tmp_path_factory.mktemp("deployed-episode")
    generate_episode(root / "gen", seed=21, duration=8)
    video = root / "inbox" / "ep21.mp4"
    video.parent.mkdir()
    (root / "gen" / "episode.mp4").rename(video)
    return video


@pytest.fixture(scope="module")
def embedded_run(episode_video, tmp_path_factory) -> Path:
    """The same episode run embedded (no server configured): the reference output."""
    root = tmp_path_factory.mktemp("embedded")
    env = server_env(root / "home")
    (root / "home").mkdir()
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    done = run([CELMASK, "run", str(episode_video), "--out", str(root / "out"), *sets], env)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "out" / "ep21"


def test_deployed_episode_retry_one_shot_matches_embedded(episode_video, embedded_run, tmp_path):
    out = tmp_path / "out"
    with running_server(tmp_path) as api_url:
        env = server_env(tmp_path, api_url)
        deployed = run(
            [CELMASK, "deploy", "--inbox", str(episode_video.parent), "--out", str(out), "--timezone", "Asia/Tokyo"],
            env,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "work pool gpu" in deployed.stdout and "concurrency limit gpu: 1 slot" in deployed.stdout

        workers = [start_worker(pool, env, tmp_path / f"worker-{pool}.log") for pool in ("cpu", "gpu")]
        try:
            params = {
                "video": str(episode_video),
                "out": str(out),
                "config": SETTINGS,
                "faults": {"shots": [FAILING_SHOT], "crash": [CRASHING_SHOT]},
            }
            result = call_api(env, "run", "episode/episode", json.dumps(params), "900")
            parent, shots = result["run"], result["shots"]
            logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
            assert parent["name"] == "ep-ep21" and parent["state"] == "FAILED", (parent, logs[-3000:])
            assert f"shots [{FAILING_SHOT}]" in parent["message"]
            assert "episode:ep21" in parent["tags"] and "pool:cpu" in parent["tags"]
            crashed = f"ep-ep21-shot-{CRASHING_SHOT}"
            assert sorted(s["state"] for s in shots if s["name"] == crashed) == ["COMPLETED", "CRASHED"], shots
            states = {s["name"]: s["state"] for s in shots if s["name"] != crashed or s["state"] == "COMPLETED"}
            expected = len(json.loads((out / "ep21" / "_run" / "plan.json").read_text())["shots"])
            assert len(states) == expected >= 2, states
            assert {n for n, s in states.items() if s != "COMPLETED"} == {f"ep-ep21-shot-{FAILING_SHOT}"}, states
            assert states[f"ep-ep21-shot-{FAILING_SHOT}"] == "FAILED"
            written = shot_files(out / "ep21")
            assert sorted(written) == [i for i in range(expected) if i != FAILING_SHOT]
            assert not (out / "ep21" / SUCCESS_NAME).exists()
            assert [s.status for s in read_episode_table(out / "ep21")].count("failed") == 1

            failed = next(s for s in shots if s["state"] == "FAILED")
            retried = run([PREFECT, "flow-run", "retry", failed["id"]], env, 120)
            assert retried.returncode == 0, retried.stdout + retried.stderr
            again = call_api(env, "wait", failed["id"], "2", "300")
            assert again["state"] == "COMPLETED" and again["run_count"] == 2, again
        finally:
            for worker in workers:
                stop_process_group(worker)

        # What operators see: progress, a table of shots, a contact sheet per shot.
        found = call_api(env, "artifacts")
        assert found["ep21-progress"]["type"] == "progress" and float(found["ep21-progress"]["data"]) == 100.0
        assert found["ep21-shots"]["type"] == "table"
        shot0 = found["ep21-shot-0"]
        assert shot0["type"] == "markdown" and "](data:image/jpeg;base64," in shot0["data"]

        # The retried shot finished the episode itself; finalize says so again.
        assert (out / "ep21" / SUCCESS_NAME).exists()
        final = run([CELMASK, "finalize", str(out / "ep21")], env)
        assert final.returncode == 0, final.stdout + final.stderr

    deployed_files, embedded_files = shot_files(out / "ep21"), shot_files(embedded_run)
    assert sorted(deployed_files) == sorted(embedded_files)
    for index, path in embedded_files.items():
        assert deployed_files[index].read_bytes() == path.read_bytes(), f"shot {index} differs"


def test_nightly_cron_creates_runs_at_two_in_the_time_zone(tmp_path):
    with running_server(tmp_path) as api_url:
        env = server_env(tmp_path, api_url)
        deployed = run(
            [
                CELMASK,
                "deploy",
                "--inbox",
                str(tmp_path / "inbox"),
                "--out",
                str(tmp_path / "out"),
                "--timezone",
                "America/New_York",
            ],
            env,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        runs = []
        for _ in range(30):
            runs = call_api(env, "scheduled", "nightly")["runs"]
            if runs:
                break
            subprocess.run(["sleep", "2"], check=True)
    assert runs, "the scheduler made no nightly runs"
    for scheduled in runs:
        local = datetime.fromisoformat(scheduled["expected_start"]).astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (2, 0), scheduled
