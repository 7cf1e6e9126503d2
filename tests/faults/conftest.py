"""The finished episode every fault starts from, a fresh copy of it per test, and the
environment for ``celmask`` subprocesses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.finished import Finished, finished_episode


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Finished:
    return finished_episode(tmp_path_factory.mktemp("finished"))


@pytest.fixture
def out(finished, tmp_path) -> Path:
    """A copy of the finished output tree, for one test to damage."""
    shutil.copytree(finished.out, tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict[str, str]:
    """Subprocess environment: its own PREFECT_HOME, none of the caller's Prefect settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path_factory.mktemp("prefect_home")),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        YOLO_OFFLINE="1",
    )
    return env
