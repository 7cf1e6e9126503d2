"""Reading the states of submitted flow runs through a restart of the server or its
database: the episode and nightly flows watch their children for minutes, and a
watcher that failed on the first refused request would abandon children that go on.
A child Pending too long is ended here too: after a server restart Prefect can leave
a run Pending for good, and the event that would let an automation end it may be lost
with the server."""

from __future__ import annotations

import datetime
import time
from typing import Any
from uuid import UUID

API_OUTAGE_SECONDS = 600.0
"""How long a watcher waits through an unreachable server before it fails."""
PENDING_SECONDS = 300
"""A flow run this long Pending never started: its worker was lost between taking it and
starting its process, or the server restarted meanwhile (Prefect leaves such runs
Pending for good, and they hold their pool's slots). It is marked Crashed."""


class RunWatch:
    """``state(run_id)``: the run's state, None while it cannot be read (the server is
    away, Prefect's client has retried for a minute); raises once the server has been
    away :data:`API_OUTAGE_SECONDS`. A run Pending :data:`PENDING_SECONDS` is marked
    Crashed first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.away_since: float | None = None

    def state(self, run_id: UUID) -> Any:
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            state = self.client.read_flow_run(run_id).state
            if state is not None and state.is_pending() and _age(state.timestamp) > PENDING_SECONDS:
                state = self._crash(run_id)
        except (httpx.TransportError, PrefectHTTPStatusError) as error:
            if isinstance(error, PrefectHTTPStatusError) and error.response.status_code < 500:
                raise
            now = time.monotonic()
            self.away_since = self.away_since or now
            if now - self.away_since > API_OUTAGE_SECONDS:
                raise
            return None
        self.away_since = None
        return state

    def _crash(self, run_id: UUID) -> Any:
        from prefect.states import Crashed

        message = f"Pending for {PENDING_SECONDS} s: its process never started"
        self.client.set_flow_run_state(run_id, Crashed(message=message), force=True)
        return self.client.read_flow_run(run_id).state


def _age(when: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds()
