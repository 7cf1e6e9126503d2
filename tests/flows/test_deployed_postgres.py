"""The deployed mode on a studio's database: a PostgreSQL cluster started here (initdb
in a temporary directory, its own port on 127.0.0.1), a Prefect server on it with
basic auth on, ``celmask deploy`` with two GPU slots, a CPU worker and two "GPU"
process workers pinned to distinct devices (CUDA_VISIBLE_DEVICES 0 and 1, on this
CPU machine), and one short episode through the deployed path: every shot completes
and records the device of the worker that ran it. Everything is stopped by PID."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from celmask.tasks.manifest.layout import SUCCESS_NAME, summary_path
from tests.support.postgres import MISSING, bindir, running_postgres
from tests.support.prefect_server import (
    call_api,
    run,
    running_server,
    server_env,
    start_worker,
    stop_process_group,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bindir() is None, reason=MISSING)]

CELMASK = str(Path(sys.executable).with_name("celmask"))
AUTH = "studio:night-shift"
GPUS = ("0", "1")
"""CUDA_VISIBLE_DEVICES of the two GPU workers."""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """PostgreSQL, and a Prefect server on it with auth on: (its API URL, a client's environment)."""
    home = tmp_path_factory.mktemp("prefect-on-postgres")
    with (
        running_postgres() as database,
        running_server(
            home,
            settings={
                "PREFECT_API_DATABASE_CONNECTION_URL": database,
                "PREFECT_SERVER_API_AUTH_STRING": AUTH,
            },
        ) as api_url,
    ):
        yield api_url, {**server_env(home, api_url), "PREFECT_API_AUTH_STRING": AUTH}


def _post(url: str, auth: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def test_server_on_postgres_wants_the_auth_string(studio):
    api_url, _ = studio
    with urllib.request.urlopen(f"{api_url}/health", timeout=10) as r:  # probes need none
        assert r.status == 200
    assert _post(f"{api_url}/flows/filter", None) == 401
    assert _post(f"{api_url}/flows/filter", "studio:wrong") == 401
    assert _post(f"{api_url}/flows/filter", AUTH) == 200


def test_deployed_episode_each_shot_on_its_workers_gpu(studio, tmp_path):
    from celmask.tasks.synth import generate_episode

    _, env = studio
    generate_episode(tmp_path / "gen", seed=21, duration=6)
    video = tmp_path / "inbox" / "ep21.mp4"
    video.parent.mkdir()
    (tmp_path / "gen" / "episode.mp4").rename(video)
    out = tmp_path / "out"
    deployed = run([CELMASK, "deploy", "--inbox", str(video.parent), "--out", str(out), "--gpu-slots", "2"], env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "concurrency limit gpu: 2 slot(s)" in deployed.stdout

    # One flow run at a time per GPU worker (--limit 1), as one GPU holds one shot.
    logs = {gpu: tmp_path / f"worker-gpu-{gpu}.log" for gpu in GPUS}
    workers = [start_worker("cpu", env, tmp_path / "worker-cpu.log")]
    workers += [
        start_worker(
            "gpu",
            {**env, "CUDA_VISIBLE_DEVICES": gpu, "PREFECT_LOGGING_LEVEL": "INFO"},
            log,
            f"gpu-{gpu}",
            "--limit",
            "1",
        )
        for gpu, log in logs.items()
    ]
    try:
        params = {"video": str(video), "out": str(out), "config": {"work_size": 480}}
        result = call_api(env, "run", "episode/episode", json.dumps(params), "600")
    finally:
        for worker in workers:
            stop_process_group(worker)
    parent, shots = result["run"], result["shots"]
    worker_logs = {gpu: log.read_text() for gpu, log in logs.items()}
    assert parent["state"] == "COMPLETED", (parent, "".join(worker_logs.values())[-3000:])
    assert (out / "ep21" / SUCCESS_NAME).exists()
    assert len(shots) >= 2 and {s["state"] for s in shots} == {"COMPLETED"}, shots
    assert len({s["name"] for s in shots}) == len(shots)  # one run per shot: nothing crashed and was resubmitted

    ran_on = {}
    for shot in shots:
        index = int(shot["name"].rsplit("-", 1)[1])
        # Both workers may try a run ("submitting flow run ..."); the server gives it to one.
        (worker_gpu,) = [
            gpu for gpu, text in worker_logs.items() if f"Flow run '{shot['name']}' submitted to infrastructure" in text
        ]
        recorded = json.loads(summary_path(out / "ep21", index).read_text())["ran_on"]
        # A pinned process sees its one GPU as cuda:0 (on this machine there is none: cpu).
        assert recorded["cuda_visible_devices"] == worker_gpu and recorded["device"] in ("cpu", "cuda:0"), (
            shot,
            recorded,
        )
        ran_on[index] = worker_gpu
    assert set(ran_on.values()) == set(GPUS), f"both GPU workers should have had a shot: {ran_on}"
