"""Running flows in this process on Prefect's embedded, SQLite-backed API.

Without ``PREFECT_API_URL`` the first API call starts a local server; it takes
8-16 s here (60 s allowed), so commands keep one flow run per invocation and start
it in the background while they import, load models and detect shots. Flow-run
heartbeats exist to detect crashed runs on remote workers; in-process they only
cost about a second per flow run (a thread joined at exit), so they are off here
and stay on for deployed runs (../shared/notes/prefect.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
}
"""Environment for flows run from the command line: quiet, no outside traffic. Full
logs still reach the run's page in the UI; the command prints its own one-line
errors. Values the user set win."""


@contextlib.contextmanager
def local_prefect() -> Iterator[None]:
    """Settings for flows run from the command line, embedded or against a configured server."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    for handler in logging.getLogger().handlers:  # Prefect's INFO records propagate to ours: keep it at warnings
        handler.setLevel(logging.WARNING)
    updates = {} if PREFECT_API_URL.value() else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with temporary_settings(updates=updates):
        yield


def start_server() -> threading.Thread | None:
    """Start the embedded server in the background (None when a server is configured):
    the caller imports, loads models and detects shots meanwhile, then joins the
    thread before its flow's first API call. Join it even on error, so two starts
    never race."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None

    def hello() -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.hello()

    thread = threading.Thread(target=hello, name="celmask-prefect-start", daemon=True)
    thread.start()
    return thread
