"""``celmask`` commands run in their own session, the way a user's terminal runs them,
so a test can signal one at a chosen moment and then find every process it left."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from celmask.tasks.manifest.layout import summary_path
from tests.support.finished import CELMASK, EPISODE, Finished

SLOW_DETECTION = ("--set", "detector.imgsz=1280")
"""Detection at 1280 px keeps a recompute busy for seconds, so a signal lands inside it."""


def start(env: dict[str, str], *args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CELMASK, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_args(finished: Finished, out: Path, *more: str) -> list[str | Path]:
    """``celmask run`` of the finished episode's video into ``out``, on its settings."""
    settings = [f"{k}={v}" for k, v in finished.settings.items()]
    return [
        "run",
        finished.video,
        "--out",
        out,
        "--episode-id",
        EPISODE,
        *(a for s in settings for a in ("--set", s)),
        *more,
    ]


def wait_for(what: str, ready: Callable[[], bool], command: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``ready()``; fails when ``command`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if command.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {command.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.05)


def recomputing(episode: Path) -> Callable[[], bool]:
    """A shot's recompute has started: it withdrew its summary."""
    return lambda: not all(summary_path(episode, i).exists() for i in (0, 1))


def holds_lock(episode: Path, pid: int) -> Callable[[], bool]:
    lock = episode / "_run" / "lock"
    return lambda: lock.exists() and f"(pid {pid} " in lock.read_text()


def session_processes(sid: int) -> list[str]:
    """Command lines of the processes still in session ``sid``."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                left.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return left


def none_left(sid: int, within: float = 15.0) -> list[str]:
    """The processes of session ``sid`` still there after ``within`` seconds (none, one hopes)."""
    deadline = time.monotonic() + within
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def leftovers(episode: Path) -> list[Path]:
    """Temporary files and folders of interrupted writes."""
    return [p for p in episode.rglob(".*") if p.name.endswith((".partial", ".old"))]


def flow_runs(env: dict[str, str]) -> list[tuple[str, str]]:
    """(name, state type) of every flow run, from the embedded server's SQLite database."""
    with sqlite3.connect(Path(env["PREFECT_HOME"]) / "prefect.db") as db:
        return sorted(db.execute("select name, state_type from flow_run"))
