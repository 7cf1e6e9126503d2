"""The episode and nightly flows' watcher ends children whose process is gone, on a
real Prefect server: one Running without heartbeats and one stuck Pending are marked
Crashed with the reason; one Running that sends heartbeats is left alone. (Seconds
shortened: the rules are the same at 120 and 300 s.)"""

from __future__ import annotations

import time

import pytest

from celmask.flows import watch

pytestmark = pytest.mark.slow

SILENT_S = 15
BEAT_AT_S = 7
"""A heartbeat sent at 7 s is stored by 15 s (the server flushes events every 5 s) and
still counts then."""


def test_a_silent_running_run_and_a_stuck_pending_one_are_crashed_a_beating_one_is_not(monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.states import Pending, Running
    from prefect.testing.utilities import prefect_test_harness

    @flow(name="watched")
    def watched() -> None:
        """Never runs: its runs are made by hand in the states under test."""

    monkeypatch.setattr(watch, "SILENT_SECONDS", SILENT_S)
    monkeypatch.setattr(watch, "PENDING_SECONDS", SILENT_S)
    monkeypatch.setattr(watch, "HEARTBEAT_SECONDS", 0)
    with prefect_test_harness(server_startup_timeout=60), get_client(sync_client=True) as client:
        silent, beating = (client.create_flow_run(watched, name=n, state=Running()).id for n in ("silent", "beating"))
        stuck = client.create_flow_run(watched, name="stuck", state=Pending()).id
        watcher = watch.RunWatch(client)
        started = time.monotonic()
        assert all(watcher.state(r).is_running() for r in (silent, beating))  # too young to judge

        time.sleep(BEAT_AT_S)
        emit_event(watch.HEARTBEAT_EVENT, resource={"prefect.resource.id": f"prefect.flow-run.{beating}"})
        EventsWorker.drain_all()
        time.sleep(max(0.0, SILENT_S + 0.5 - (time.monotonic() - started)))

        assert watcher.state(beating).is_running()
        crashed = watcher.state(silent)
        assert crashed.is_crashed() and crashed.message == watch.SILENT_MESSAGE + watch.BY_PARENT, crashed
        pending = watcher.state(stuck)
        assert pending.is_crashed() and pending.message == watch.PENDING_MESSAGE + watch.BY_PARENT, pending
