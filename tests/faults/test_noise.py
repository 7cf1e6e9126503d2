"""Minor findings of issue 13 on what commands print: stdout stays the command's own
(ultralytics' first-run banner went there and broke ``--json``), and a reader that
stops early (``celmask config | head -1``) gets no BrokenPipe traceback."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.finished import CELMASK, celmask

pytestmark = pytest.mark.faults


def test_json_output_is_json_on_a_first_run(finished, env, tmp_path):
    first = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no ultralytics settings yet
    first.pop("YOLO_CONFIG_DIR", None)
    done = celmask(first, "segment", finished.video, "--frames", "0:4", "--set", "work_size=160", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["frames"] == 4
    assert "Ultralytics Settings" in done.stderr  # said, where logs go


@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_a_reader_that_stops_early_gets_no_traceback(env, reader):
    done = subprocess.run(
        f"{CELMASK} config | {reader}", shell=True, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith("device ") if reader != "true" else done.stdout == ""
