"""Configuration keys: dotted names, TOML files of flat keys, --set overrides, one-line
errors, and a hash that depends on the settings only."""

from __future__ import annotations

import pytest

from celmask.tasks.core.config import config_hash, config_json, flatten, load_config
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.segment.config import SegmentConfig


def test_every_key_the_issue_names_exists_with_a_default():
    keys = flatten(SegmentConfig())
    for key in (
        "detector",
        "detector.weights",
        "detector.path",
        "propagator",
        "refiner",
        "refiner.checkpoint",
        "keyframe",
    ):
        assert key in keys
    assert keys["detector"] == "yolo" and keys["propagator"] == "flow" and keys["keyframe"] == "score"
    assert "tracks.min_iou" in keys and "flow.preset" in keys and "keyframe.weights" in keys


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('detector = "file"\n"detector.path" = "d.parquet"\n"tracks.max_gap" = 8\nrefiner = "sam"\n')
    config = load_config(
        SegmentConfig(), path, ["refiner=none", "detector.classes=0,2", "keyframe.weights=agreement:1"]
    )
    assert config.detector == "file" and config.detector_path == "d.parquet"
    assert config.tracks.max_gap == 8 and config.refiner == "none"
    assert config.detector_classes == (0, 2) and config.keyframe_weights == {"agreement": 1.0}
    assert load_config(SegmentConfig(), None, ["detector.path=none"]).detector_path is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["detectr=file"], "unknown config key 'detectr'"),
        (["refiner=magic"], "refiner must be one of sam, vote, pieces, none, got 'magic'"),
        (["tracks.max_gap=many"], "bad value 'many' for tracks.max_gap"),
        (["propagation.rekey_below=2"], r"propagation.rekey_below must be in \[0, 1\], got 2.0"),
        (["refiner"], "expected key=value"),
        (["keyframe.weights=luck:1"], "bad value"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(CelmaskError, match=message) as error:
        load_config(SegmentConfig(), None, overrides)
    assert "\n" not in str(error.value)


def test_bad_files(tmp_path):
    with pytest.raises(CelmaskError, match="config file not found"):
        load_config(SegmentConfig(), tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("detector = \n")
    with pytest.raises(CelmaskError, match="not valid TOML"):
        load_config(SegmentConfig(), bad)
    nested = tmp_path / "nested.toml"
    nested.write_text("tracks.max_gap = 8\n")
    with pytest.raises(CelmaskError, match="quote dotted keys"):
        load_config(SegmentConfig(), nested)


def test_hash_follows_the_settings_not_their_source(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('"tracks.max_gap" = 8\n')
    from_file = load_config(SegmentConfig(), path)
    from_flag = load_config(SegmentConfig(), None, ["tracks.max_gap=8"])
    assert config_hash(from_file) == config_hash(from_flag) != config_hash(SegmentConfig())
    assert config_json(SegmentConfig()) == config_json(SegmentConfig())
