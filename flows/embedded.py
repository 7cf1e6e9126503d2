"""Running flows in this process on Prefect's embedded, SQLite-backed API.

Without ``PREFECT_API_URL`` Prefect's client starts a local server on its first API
call and waits for it (8-16 s here), and its way of starting one imports the whole
server into this process too (~6 s of CPU, holding the GIL). Commands start the
same server themselves instead, as soon as they know no server is configured, as a
process that imports on the other core while the command imports, loads models and
detects shots; the command waits for it only before its flow's first API call
(measured on the demo: ready when the shots are detected, where it used to keep the
command waiting about 5 s). Every Prefect client in the process (flow engine, log
and event workers) finds it through ``PREFECT_API_URL``.

Flow-run heartbeats exist to detect crashed runs on remote workers; in-process they
only cost about a second per flow run (a thread joined at exit), so they are off
for the embedded server and stay on for deployed runs (../shared/notes/prefect.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from celmask.tasks.core.errors import CelmaskError

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
}
"""Environment for flows run from the command line: quiet, no outside traffic. Full
logs still reach the run's page in the UI; the command prints its own one-line
errors. Values the user set win."""

SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
"""What Prefect's own ephemeral server gets (prefect.server.api.server.SubprocessASGIServer):
no UI, only the services an ephemeral server needs."""
STARTUP_FAILURE = 3
"""uvicorn's exit status when it could not start: a bad database, or its port taken
between choosing and binding it."""
_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(Error|Exception): ")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The health check talks to 127.0.0.1 directly, whatever proxy the environment names."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@dataclass
class LocalServer:
    """Prefect's API server for this command only, in a child process (SQLite in
    ``PREFECT_HOME``); whoever starts it stops it."""

    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None
    log: IO[bytes] | None = None
    """The server's console output: its last line explains a failed start."""
    lifeline: int | None = None
    """Write end of the pipe the server watches (:mod:`celmask.flows.server_child`)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | SERVER_ENV
        if self.log is not None:  # a start again on another port
            self.log.close()
        self.log = tempfile.TemporaryFile()
        self._close_lifeline()
        lifeline, self.lifeline = os.pipe()  # the server ends when this process closes its end
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celmask.flows.server_child",
                str(lifeline),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(lifeline,),
        )
        os.close(lifeline)

    def _close_lifeline(self) -> None:
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None

    def wait(self, timeout: float) -> None:
        """Until the server answers (on another port if its port was taken meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status == STARTUP_FAILURE and _taken(self.port):
                self.port = _free_port()
                self.start()
            elif status is not None:
                raise CelmaskError(
                    self.where,
                    f"exited while starting ({self._last_words()})",
                    "fix that, or set PREFECT_API_URL to a running server",
                )
            try:
                with _NO_PROXY.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:  # not listening yet
                pass
            time.sleep(0.1)
        raise CelmaskError(
            self.where,
            f"did not answer within {timeout:.0f} s ({self._last_words()})",
            "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running server",
        )

    @property
    def where(self) -> str:
        return f"embedded Prefect server (database in {os.environ.get('PREFECT_HOME', '~/.prefect')})"

    def _last_words(self) -> str:
        """The server's last exception line (else its last line)."""
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if _EXCEPTION.match(line)]
        return (errors or lines or ["no output"])[-1]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_lifeline()
        if self.log is not None:
            self.log.close()


def quiet_prefect() -> None:
    """Prefect as commands use it: quiet console, no outside traffic."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for handler in logging.getLogger().handlers:  # Prefect's INFO records propagate to ours: keep it at warnings
        handler.setLevel(logging.WARNING)


def start_server() -> LocalServer | None:
    """Start the embedded server now, unless the environment names a server. It takes
    seconds, so a command that will run a flow calls this first thing and hands the
    server to :func:`local_prefect` (which stops it again should Prefect's settings
    name a server after all); stop it yourself if the command fails before that."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    quiet_prefect()  # the server inherits the environment
    server = LocalServer()
    server.start()
    return server


@contextlib.contextmanager
def local_prefect(meanwhile: Callable[[], None] | None = None, server: LocalServer | None = None) -> Iterator[None]:
    """Prefect for flows run from the command line: quiet, on the configured server or
    else on an embedded one (``server``, or one started here), stopped after Prefect has
    sent what it holds. ``meanwhile``: work that needs no API (imports, models, shot
    detection), done while the server starts and warms up."""
    quiet_prefect()
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if PREFECT_API_URL.value():
        if server is not None:
            server.stop()
        check_reachable(PREFECT_API_URL.value())
        if meanwhile:
            meanwhile()
        yield
        return
    server = server or start_server()
    try:
        alone = _join_database()
        with ThreadPoolExecutor(1, thread_name_prefix="celmask-server") as pool:
            ready = pool.submit(
                _ready, server, float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]), alone
            )
            if meanwhile:
                meanwhile()
            ready.result()
        _use(server.url)
        try:
            with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                yield
        finally:
            _drain_workers()
            _use(None)
    finally:
        server.stop()
        _leave_database()


DATABASE_USERS = "celmask-embedded.lock"
"""In ``PREFECT_HOME``: every command on the embedded database holds a shared flock on it."""
_users: list[int] = []


def _join_database() -> bool:
    """Hold a shared lock on the embedded database for this command; return whether it
    is the only command using it (it got the lock exclusively first), so that any run
    the database still shows running belongs to a command that was killed."""
    home = os.path.expanduser(os.environ.get("PREFECT_HOME", "~/.prefect"))
    try:
        os.makedirs(home, exist_ok=True)
        fd = os.open(os.path.join(home, DATABASE_USERS), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return False  # the server reports an unusable PREFECT_HOME itself
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False
    fcntl.flock(fd, fcntl.LOCK_SH)
    _users.append(fd)
    return alone


def _leave_database() -> None:
    while _users:
        os.close(_users.pop())


REACH_SECONDS = 10.0


def check_reachable(api_url: str) -> None:
    """A one-line error, before any work, when the configured server does not answer
    (``/health`` needs no auth string)."""
    from celmask.tasks.run.inbox import redact

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=REACH_SECONDS) as response:
            response.read()
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise CelmaskError(
            f"PREFECT_API_URL {redact(api_url)}",
            f"the Prefect server does not answer ({reason})",
            "start it, fix PREFECT_API_URL, or unset it to run on an embedded server",
        ) from None


def _ready(server: LocalServer, timeout: float, alone: bool = False) -> None:
    """Wait for the server, then make its first API requests, which cost it about half a
    second more than later ones: done here, they overlap the command's own start-up
    instead of delaying its first flow run. ``alone``: no other command uses the
    database, so mark the runs it shows running crashed (:func:`crash_orphans`)."""
    from prefect.client.orchestration import SyncPrefectClient

    server.wait(timeout)
    with contextlib.suppress(Exception), SyncPrefectClient(server.url) as client:  # the flow reports real errors
        client.hello()
        client.raise_for_api_version_mismatch()
        if alone:
            crash_orphans(client)


ORPHAN_MESSAGE = "its celmask command ended without reporting (killed); marked crashed by the next command"


def crash_orphans(client) -> list[str]:
    """Mark every flow run still running or pending crashed: called only when no other
    command uses the embedded database, whose runs all come from celmask commands on
    this host, so none of them is really running. Return their names."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
        )
    )
    for run in runs:
        client.set_flow_run_state(run.id, Crashed(message=ORPHAN_MESSAGE), force=True)
    return [run.name for run in runs]


def _use(url: str | None) -> None:
    """Point every Prefect client of this process, in any thread, at ``url`` (None:
    back to what the settings say)."""
    from prefect.context import refresh_global_settings_context

    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def _drain_workers() -> None:
    """Send the logs and events Prefect still holds while the server is there."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)
