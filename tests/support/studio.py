"""A studio's night on one machine, for the load test and ``bench/load.py``: PostgreSQL,
a Prefect server on it with auth on, ``celmask deploy``, CPU-pool and "GPU"-pool
process workers (each GPU worker pinned by CUDA_VISIBLE_DEVICES, one flow run at a
time), and an inbox of short generated episodes plus one corrupt file, with the
shot files an embedded run makes of each. Every process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.finished import shot_bytes
from tests.support.postgres import Cluster, postgres_cluster
from tests.support.prefect_server import (
    call_api,
    free_port,
    run,
    server_env,
    start_server,
    start_worker,
    stop_process_group,
    stop_process_groups,
)

CELMASK = str(Path(sys.executable).with_name("celmask"))
AUTH = "studio:night-shift"
SETTINGS = {"work_size": 320}
"""Small frames: each shot segments in a second or two."""
SEEDS = (2, 3, 6, 7, 12, 14, 15, 16)
"""Episodes of 3 s at 320x180 with two shots each."""
DURATION = 3.0
GOOD = tuple(f"ep{seed:02d}" for seed in SEEDS)
CORRUPT = "bad"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
CPU_RUNS = 2
"""Flow runs at once per CPU-pool worker (episodes, and the nightly run itself)."""
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
SLOT_LINE = re.compile(r"held a slot of (?P<limit>\S+) from (?P<start>\S+) to (?P<end>\S+)")
"""The shot runs' log line of their GPU slot (``celmask.flows.episode.SLOT_LOG``)."""


def make_inbox(root: Path, episodes: int = len(SEEDS)) -> Path:
    """``root/inbox``: the first ``episodes`` of :data:`SEEDS` and a corrupt ``bad.mp4`` (fixed bytes)."""
    from celmask.tasks.synth import generate_episode

    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    for seed, name in list(zip(SEEDS, GOOD, strict=True))[:episodes]:
        generate_episode(root / "gen" / name, seed=seed, duration=DURATION, width=320, height=180)
        (root / "gen" / name / "episode.mp4").rename(inbox / f"{name}.mp4")
    (inbox / f"{CORRUPT}.mp4").write_bytes(random.Random(17).randbytes(40_000))
    return inbox


def embedded_shots(inbox: Path, root: Path) -> dict[str, dict[str, bytes]]:
    """Each good episode's shot files as an embedded run writes them (the same functions,
    in this process, into ``root``): episode id -> file name -> bytes."""
    from celmask.tasks.run.plan import plan_episode
    from celmask.tasks.run.shot import run_shot

    shots = {}
    for name in GOOD:
        video, episode = inbox / f"{name}.mp4", root / name
        plan, _ = plan_episode(video, episode, SETTINGS)
        for shot in plan.shots:
            run_shot(video, shot, episode, SETTINGS)
        shots[name] = shot_bytes(episode)
    return shots


@dataclass
class Studio:
    root: Path
    env: dict[str, str]
    """A client's environment: the server's URL and auth string."""
    inbox: Path
    out: Path
    database: Cluster
    home: Path
    port: int
    """The server's, kept when it restarts."""
    server: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_server(self) -> None:
        """The server on the database, auth on; leases of the ``gpu`` slots kept on disk,
        so that a restarted server still knows who holds them."""
        settings = {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database.url,
            "PREFECT_SERVER_API_AUTH_STRING": AUTH,
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        }
        self.server = start_server(self.home, self.port, settings=settings)
        api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {**server_env(self.home, api_url), "PREFECT_API_AUTH_STRING": AUTH}

    def stop_server(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.server is not None:
            stop_process_group(self.server, sig=sig)
            self.server = None

    def start_workers(self, cpu: int, gpus: tuple[str, ...]) -> None:
        """``cpu`` CPU-pool workers and a GPU-pool worker per device in ``gpus``."""
        for n in range(cpu):
            self._start(f"cpu-{n}", "cpu", self.env, "--limit", str(CPU_RUNS))
        for gpu in gpus:
            env = {**self.env, "CUDA_VISIBLE_DEVICES": gpu, "PREFECT_LOGGING_LEVEL": "INFO"}  # the slot's log line
            self._start(f"gpu-{gpu}", "gpu", env, "--limit", "1")

    def _start(self, name: str, pool: str, env: dict[str, str], *args: str) -> None:
        self.workers[name] = start_worker(pool, env, self.root / f"worker-{name}.log", name, *args)

    def stop_workers(self) -> None:
        stop_process_groups(list(self.workers.values()))
        self.workers.clear()

    def night(self, out: Path | None = None, timeout: float = 900) -> dict:
        """The nightly deployment over the inbox (into ``out``, default the deployed one),
        run to its end; its run."""
        params = {"config": SETTINGS, **({"out": str(out)} if out else {})}
        ran = call_api(self.env, "run", "nightly/nightly", json.dumps(params), str(timeout), timeout=timeout + 60)
        return ran["run"]

    def submit_night(self) -> str:
        """The nightly deployment's run, started and not waited on; its id."""
        return call_api(self.env, "submit", "nightly/nightly", json.dumps({"config": SETTINGS}))["id"]

    def wait(self, run_id: str, timeout: float) -> dict:
        """The run once final, or as it is after ``timeout`` seconds."""
        return call_api(self.env, "wait", run_id, "1", str(timeout), timeout=timeout + 60)

    def settled_runs(self, timeout: float) -> list[dict]:
        """Every flow run, once all are final; AssertionError with those that are not after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs()
            open_runs = [r for r in runs if r["state"] not in FINAL]
            if not open_runs:
                return runs
            assert time.monotonic() < deadline, f"runs not final after {timeout:.0f} s: {open_runs}"
            time.sleep(5)

    def kill_gpu_worker_mid_shot(self, timeout: float = 900) -> str:
        """SIGKILL a GPU worker and its flow run's processes, as when its host is lost,
        once a shot holds a slot: the worker whose flow run started first. Its name."""
        deadline = time.monotonic() + timeout
        while True:
            leases = [p for p in (self.home / "concurrency_leases").glob("*.json") if p.name != "expirations.json"]
            busy = {name: _descendants(w.pid) for name, w in self.workers.items() if name.startswith("gpu-")}
            busy = {name: pids for name, pids in busy.items() if pids}
            if leases and busy:
                break
            assert time.monotonic() < deadline, "no shot took a gpu slot"
            time.sleep(0.5)
        name = min(busy, key=lambda n: min(busy[n]))  # the lowest PID: the oldest flow run process
        for pid in busy[name]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_process_group(self.workers.pop(name), sig=signal.SIGKILL)
        return name

    def restart_server(self) -> None:
        """SIGKILL the server, start it again on the same port and database."""
        self.stop_server(signal.SIGKILL)
        self.start_server()

    def restart_database(self) -> None:
        self.database.stop()
        self.database.start()

    def runs(self) -> list[dict]:
        return call_api(self.env, "runs")["runs"]

    def slot_log(self, limit: str = "gpu") -> list[tuple[datetime.datetime, datetime.datetime, str]]:
        """When each shot run held a slot of ``limit``, as its log line says: (start, end, flow run id)."""
        lines = call_api(self.env, "logs", f"held a slot of {limit} ")["logs"]
        found = [(SLOT_LINE.search(line["message"]), line["flow_run_id"]) for line in lines]
        return [
            (datetime.datetime.fromisoformat(m["start"]), datetime.datetime.fromisoformat(m["end"]), run_id)
            for m, run_id in found
            if m and m["limit"] == limit
        ]

    def worker_logs(self) -> str:
        return "".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.root.glob("worker-*.log")))


def _descendants(pid: int) -> list[int]:
    """The PIDs of every process below ``pid`` (from /proc)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def most_at_once(intervals: list[tuple[datetime.datetime, datetime.datetime, str]]) -> int:
    """The most (start, end, ...) intervals open at one instant (one that ends as another
    starts does not overlap it)."""
    edges = sorted([(i[0], 1) for i in intervals] + [(i[1], -1) for i in intervals])
    most = now = 0
    for _, step in edges:  # at one instant the ends (-1) sort before the starts
        now += step
        most = max(most, now)
    return most


@contextmanager
def running_studio(root: Path, inbox: Path, gpu_slots: int) -> Iterator[Studio]:
    """PostgreSQL, the server on it, ``celmask deploy --gpu-slots gpu_slots`` over
    ``inbox`` into ``root/out``; workers are the caller's (:meth:`Studio.start_workers`)."""
    home = root / "prefect"
    home.mkdir(parents=True)
    with postgres_cluster() as database:
        studio = Studio(root, {}, inbox, root / "out", database=database, home=home, port=free_port())
        try:
            studio.start_server()
            deployed = run(
                [CELMASK, "deploy", "--inbox", str(inbox), "--out", str(studio.out), "--gpu-slots", str(gpu_slots)],
                studio.env,
            )
            if deployed.returncode != 0:
                raise RuntimeError(f"celmask deploy failed: {deployed.stdout}{deployed.stderr}")
            # Nights are started by hand: the 02:00 JST cron (17:00 UTC) must not start one
            # of its own in the middle of a test.
            call_api(studio.env, "unschedule", "nightly/nightly")
            yield studio
        finally:
            studio.stop_workers()  # before the server and the database
            studio.stop_server()
