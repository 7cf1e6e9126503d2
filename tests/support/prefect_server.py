"""Start and stop a real Prefect server on 127.0.0.1 for tests, and process workers
and clients of it.

The server gets its own PREFECT_HOME, analytics off, and a fast scheduler loop;
it and the workers are stopped by PID (their whole process group), never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PREFECT = str(Path(sys.executable).with_name("prefect"))
API = str(Path(__file__).with_name("prefect_api.py"))
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_env(home: Path) -> dict[str, str]:
    """A command's environment: its own PREFECT_HOME, none of the caller's Prefect
    settings, no analytics, ultralytics offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", YOLO_OFFLINE="1")
    return env


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = command_env(home)
    env.update(PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_LOGGING_LEVEL="WARNING")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start_server(
    home: Path, port: int, startup_timeout: float = 90.0, settings: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """``prefect server start`` on ``port``, healthy; its log is appended to ``home/server.log``."""
    api_url = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
            env={**server_env(home), **(settings or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"prefect server exited with {proc.returncode}:\n{(home / 'server.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process_group(proc)
            raise RuntimeError(f"prefect server not healthy after {startup_timeout:.0f} s")
        time.sleep(0.5)


@contextmanager
def running_server(
    home: Path, startup_timeout: float = 90.0, settings: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Run ``prefect server start`` until the block exits; yield its API URL. ``settings``:
    more of the server's environment (its database, its auth string)."""
    port = free_port()
    proc = start_server(home, port, startup_timeout, settings)
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """``sig`` (SIGTERM) to the process group started by ``proc``, then SIGKILL what is left."""
    stop_process_groups([proc], grace, sig)


def stop_process_groups(
    procs: list[subprocess.Popen], grace: float = 15.0, sig: signal.Signals = signal.SIGTERM
) -> None:
    """:func:`stop_process_group` for several at once: one ``grace`` for all, not one each."""
    deadline = time.monotonic() + grace
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(cmd: list[str], env: Mapping[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``cmd`` to the end, its output captured."""
    return subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)


def call_api(env: Mapping[str, str], *args: str, timeout: float = 900) -> dict:
    """``tests/support/prefect_api.py ARGS`` against the server of ``env``; its JSON."""
    done = run([sys.executable, API, *args], env, timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_worker(pool: str, env: Mapping[str, str], log: Path, name: str | None = None, *args: str) -> subprocess.Popen:
    """``prefect worker start`` for ``pool`` in the checkout, polling every 2 s, logging to
    ``log``; ``args``: more of its options. Stop it with :func:`stop_process_group`."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--name", name or f"{pool}-test", *args],
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
