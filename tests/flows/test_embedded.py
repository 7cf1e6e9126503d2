"""The embedded Prefect server a command starts for itself (celmask.flows.embedded.LocalServer),
for real: a failed start is one line naming the server's own error, a port taken
meanwhile moves it to another, nothing is left running, and flow runs in it send no heartbeats. The server serving whole
runs is exercised by every embedded command in test_episode_flow.py."""

from __future__ import annotations

import socket

import pytest

from celmask.flows.embedded import LocalServer
from celmask.tasks.core.errors import CelmaskError

pytestmark = pytest.mark.slow  # each test starts a server


@pytest.fixture
def prefect_home(tmp_path, monkeypatch):
    """The server process reads its settings from the environment it inherits."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return tmp_path


def test_a_failed_start_is_one_line_with_the_servers_error(prefect_home, monkeypatch):
    (prefect_home / "file").write_text("")
    monkeypatch.setenv("PREFECT_HOME", str(prefect_home / "file" / "home"))  # cannot hold a database
    server = LocalServer()
    server.start()
    try:
        with pytest.raises(CelmaskError, match=r"exited while starting \(.*unable to open database file\)") as error:
            server.wait(60)
        assert "\n" not in str(error.value) and "PREFECT_API_URL" in str(error.value)
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_a_port_taken_meanwhile_moves_the_server_and_stop_ends_it(prefect_home):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = LocalServer(port=taken)
        server.start()
        try:
            server.wait(60)
            assert server.port != taken and server.url == f"http://127.0.0.1:{server.port}/api"
        finally:
            server.stop()
    assert server.process.poll() is not None


def test_a_server_too_slow_to_answer_is_one_line(prefect_home):
    server = LocalServer()
    server.start()
    try:
        with pytest.raises(CelmaskError, match=r"did not answer within 0 s \(") as error:
            server.wait(0.3)  # far less than its start-up takes
        assert "\n" not in str(error.value) and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in str(error.value)
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_flow_runs_in_process_send_no_heartbeats(prefect_home):
    """The README: flow-run heartbeats are off in-process (about a second per flow run,
    for crash detection nobody in-process needs). The control, the same flow with them
    on, sends one, so the count below can see them; both run where heartbeats are
    configured on, as on a deployed worker, so only local_prefect turns them off."""
    import time

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from celmask.flows.embedded import local_prefect
    from celmask.flows.watch import HEARTBEAT_EVENT

    @flow
    def which() -> str:
        return flow_run.id

    def heartbeats(client, run_id: str) -> int:
        resource = EventResourceFilter(id=[f"prefect.flow-run.{run_id}"])
        return len(
            client.read_events(
                EventFilter(event=EventNameFilter(name=[HEARTBEAT_EVENT]), resource=resource), limit=50
            ).events
        )

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}), local_prefect():  # as a worker's are
        silent = which()
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
            beating = which()
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 30  # the server stores events in batches, every few seconds
            while heartbeats(client, beating) == 0 and time.monotonic() < deadline:
                time.sleep(1)
            assert heartbeats(client, beating) >= 1
            assert heartbeats(client, silent) == 0
