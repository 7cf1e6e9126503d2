"""Reading the states of submitted flow runs through a restart of the server or its
database: the episode and nightly flows watch their children for minutes, and a
watcher that failed on the first refused request would abandon children that go on.
A child whose process is gone is ended here too (Pending too long, or Running without
a heartbeat): the automations of ``celmask deploy`` do the same from events, but the
event they need can be lost with a killed server, and then the child stays open for
good and its parent waits on it for ever."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")

API_OUTAGE_SECONDS = 600.0
"""How long a watcher waits through an unreachable server before it fails."""
PENDING_SECONDS = 300
"""A flow run this long Pending never started: its worker was lost between taking it and
starting its process, or the server restarted meanwhile (Prefect leaves such runs
Pending for good, and they hold their pool's slots). It is marked Crashed."""
HEARTBEAT_SECONDS = 30
"""How often deployed flow runs send a heartbeat (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
in the deployments' job variables, ``deployments/prefect.yaml``; Prefect's default is 180 s)."""
SILENT_SECONDS = 4 * HEARTBEAT_SECONDS
"""A Running flow run this long without a heartbeat lost its process (a worker or host
killed): it is marked Crashed, and the episode flow submits its shot again."""
POLL_SECONDS = 2.0
"""How often a watcher looks at its runs' states."""
CRASH_RESUBMITS = 1
"""Times a watched run that crashed (its worker, host or server was lost) is submitted
again by its parent."""
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
PENDING_MESSAGE = f"Pending for {PENDING_SECONDS} s: its process never started"
SILENT_MESSAGE = f"no heartbeat for {SILENT_SECONDS} s: its process was lost"
"""What a run ended for either reason says (celmask deploy's automations; the watcher adds
:data:`BY_PARENT`)."""
BY_PARENT = " (ended by the flow run that watches it)"


class RunWatch:
    """``state(run_id)``: the run's state, None while it cannot be read (the server is
    away, Prefect's client has retried for a minute); raises once the server has been
    away :data:`API_OUTAGE_SECONDS`. A run Pending :data:`PENDING_SECONDS`, or Running
    with no heartbeat for :data:`SILENT_SECONDS` while the server was up, is marked
    Crashed first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.away_since: float | None = None
        self.up_since = time.monotonic()
        """Since when the server has answered: heartbeats sent while it was away are lost,
        so silence counts only from here."""
        self.heard: dict[UUID, float] = {}
        """When each Running run's heartbeats were last looked up (once a heartbeat period)."""

    def state(self, run_id: UUID) -> Any:
        import httpx
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            state = self.client.read_flow_run(run_id).state
            if state is not None and state.is_pending() and _age(state.timestamp) > PENDING_SECONDS:
                state = self._crash(run_id, PENDING_MESSAGE + BY_PARENT)
            elif state is not None and state.is_running() and self._silent(run_id, state.timestamp):
                state = self._crash(run_id, SILENT_MESSAGE + BY_PARENT)
        except (httpx.TransportError, PrefectHTTPStatusError) as error:
            if isinstance(error, PrefectHTTPStatusError) and error.response.status_code < 500:
                raise
            now = time.monotonic()
            self.away_since = self.away_since or now
            if now - self.away_since > API_OUTAGE_SECONDS:
                raise
            return None
        if self.away_since is not None:
            self.away_since, self.up_since = None, time.monotonic()
        return state

    def _silent(self, run_id: UUID, running_since: datetime.datetime) -> bool:
        """Whether the run, Running since ``running_since``, sent no heartbeat in the last
        :data:`SILENT_SECONDS` that the server has been up."""
        now = time.monotonic()
        if min(_age(running_since), now - self.up_since) <= SILENT_SECONDS:
            return False
        if now - self.heard.get(run_id, -HEARTBEAT_SECONDS) < HEARTBEAT_SECONDS:
            return False
        self.heard[run_id] = now
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=SILENT_SECONDS)
        heard = self.client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=1,
        )
        return not heard.events

    def _crash(self, run_id: UUID, message: str) -> Any:
        from prefect.states import Crashed

        self.client.set_flow_run_state(run_id, Crashed(message=message), force=True)
        return self.client.read_flow_run(run_id).state


def ended(first: Iterable[T], submit: Callable[[T, int], UUID]) -> Iterator[tuple[T, Any]]:
    """Each of ``first`` submitted in turn (``submit(item, attempt)`` starts its run and
    gives the run's id), then watched: each item with its run's final state, as each
    ends. A run that crashed (its worker, host or server was lost) is submitted again,
    up to :data:`CRASH_RESUBMITS` times, and only its last run's state is given."""
    from prefect.client.orchestration import get_client

    runs = {submit(item, 0): (item, 0) for item in first}
    with get_client(sync_client=True) as client:
        watch = RunWatch(client)
        while runs:
            time.sleep(POLL_SECONDS)
            for run_id in list(runs):
                state = watch.state(run_id)
                if state is None or not state.is_final():
                    continue
                item, attempt = runs.pop(run_id)
                if state.is_crashed() and attempt < CRASH_RESUBMITS:
                    runs[submit(item, attempt + 1)] = (item, attempt + 1)
                else:
                    yield item, state


def _age(when: datetime.datetime) -> float:
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds()
