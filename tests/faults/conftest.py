"""A fresh copy per test of the finished episode every fault starts from (``finished``,
tests/conftest.py), and the environment for ``celmask`` subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.prefect_server import command_env

SLOW_MACHINE = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240"}


@pytest.fixture
def out(finished, tmp_path) -> Path:
    """A copy of the finished output tree, for one test to damage."""
    shutil.copytree(finished.out, tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict[str, str]:
    """Subprocess environment (tests/support/prefect_server.command_env), one for the session;
    the embedded server may take long to start on a busy machine, which is not the fault tested."""
    return {**command_env(tmp_path_factory.mktemp("prefect_home")), **SLOW_MACHINE}
