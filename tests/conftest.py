"""Test-wide settings: offline, quiet, and where the shared real material lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""../shared beside the checkout: real clips and data; absent on some machines."""


REAL_MARKERS = frozenset({"realclips", "realdata", "realart"})
"""What a test that reads ../shared says it reads (pyproject.toml's markers)."""


def pytest_collection_modifyitems(config, items) -> None:
    """A test that uses ``shared_dir`` must say which real material it reads, so that
    ``-m "not realdata"`` and the like select what they claim."""
    unmarked = [
        item.nodeid
        for item in items
        if "shared_dir" in getattr(item, "fixturenames", ())
        and not REAL_MARKERS & {m.name for m in item.iter_markers()}
    ]
    if unmarked:
        raise pytest.UsageError(f"tests read ../shared without a marker of {sorted(REAL_MARKERS)}: {unmarked}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (real clips and data live there)")
    return SHARED


@pytest.fixture(scope="session")
def manifest_episode(tmp_path_factory):
    """The small segmented episode of tests/support/episodes.py, built once per session."""
    from tests.support.episodes import build_manifest_episode

    return build_manifest_episode(tmp_path_factory.mktemp("manifest-episode"))


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A small episode segmented and finished without Prefect (tests/support/finished.py), once per session."""
    from tests.support.finished import finished_episode

    return finished_episode(tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """``clip(name)``: path of a small test clip (tests/support/clips.py), built on first use."""
    from tests.support import clips

    clips.use_directory(tmp_path_factory.mktemp("clips"))
    return clips.get
