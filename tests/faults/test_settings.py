"""Major 7 of issue 13: every setting's range is checked when the configuration is
built, so a bad value is one line and exit 2 before any work, never a crash mid-run or
(``nan``) silently different masks; ``celmask config`` shows each rule."""

from __future__ import annotations

import json

import pytest

from celmask.tasks.core.config import describe, load_config
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import success_path
from celmask.tasks.segment.config import SegmentConfig
from tests.support.finished import EPISODE, celmask, one_line_error, shot_bytes

pytestmark = pytest.mark.faults

ROWS = describe(SegmentConfig())


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_every_number_setting_declares_its_range():
    for key, value, rule, _ in ROWS:
        numbers = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        if any(is_number(v) for v in numbers) or key == "detector.classes":
            assert rule, f"{key} declares no range"


@pytest.mark.parametrize("key", [key for key, value, _, _ in ROWS if isinstance(value, float)])
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_no_float_setting_takes_nan_or_infinity(key, bad):
    with pytest.raises(CelmaskError, match=f"{key} must be") as error:
        load_config(SegmentConfig(), None, [f"{key}={bad}"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "setting, rule",
    [
        ("detector.conf=5", r"detector.conf must be in \[0, 1\], got 5.0"),
        ("detector.iou=-0.1", r"detector.iou must be in \[0, 1\]"),
        ("detector.imgsz=-640", "detector.imgsz must be >= 32"),
        ("detector.batch=0", "detector.batch must be >= 1"),
        ("detector.batch=-8", "detector.batch must be >= 1"),
        ("detector.classes=0,-1", "every value of detector.classes must be >= 0"),
        ("work_size=0", "work_size must be >= 32"),
        ("keyframe.weights=quality:nan", "every value of keyframe.weights must be >= 0"),
        ("tracks.max_gap=-1", "tracks.max_gap must be >= 0"),
        ("flow.work_width=8", "flow.work_width must be >= 32"),
        ("pieces.join_share=1", r"pieces.join_share must be in \(0, 1\)"),
        ("propagator=sam3", "propagator must be one of flow, sam2, none"),
    ],
)
def test_out_of_range_settings_are_one_line_errors(setting, rule):
    with pytest.raises(CelmaskError, match=rule) as error:
        load_config(SegmentConfig(), None, [setting])
    assert "\n" not in str(error.value) and "`celmask config` shows every setting's rule" in str(error.value)


def test_nan_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('"tracks.min_iou" = nan\n')
    with pytest.raises(CelmaskError, match=rf"{path}: tracks.min_iou must be in \[0, 1\], got nan"):
        load_config(SegmentConfig(), path)


def test_config_shows_every_rule(env):
    listed = celmask(env, "config")
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith("detector.conf "))
    assert "in [0, 1]" in line and "Minimum detection confidence" in line
    rules = json.loads(celmask(env, "config", "--json").stdout)["rules"]
    assert rules["detector.batch"] == ">= 1" and rules["keyframe.weights"] == "each >= 0"
    assert rules["refiner"] == "one of sam, vote, pieces, none"


def test_bad_settings_stop_run_and_rerun_before_any_work(finished, out, env, tmp_path):
    """The audit's `rerun --shot 0 --set detector.conf=5`, and the same for a new run."""
    episode = out / EPISODE
    done = celmask(env, "rerun", episode, "--shot", "0", "--set", "detector.conf=5")
    assert done.returncode == 2 and done.stdout == ""
    assert "detector.conf must be in [0, 1], got 5.0" in one_line_error(done)
    assert shot_bytes(episode) == finished.shots and success_path(episode).is_file()  # nothing was touched

    fresh = tmp_path / "fresh"
    done = celmask(env, "run", finished.video, "--out", fresh, "--set", "detector.batch=-1")
    assert done.returncode == 2 and "detector.batch must be >= 1, got -1" in one_line_error(done)
    assert not fresh.exists()
