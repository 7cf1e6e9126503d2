"""The shot cache keys on content, never on paths (tasks/run/shot.py): each condition of
the key changed alone, and a finished shot found without building a model or taking
a GPU slot."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace

import pytest

from celmask.tasks.core.config import apply
from celmask.tasks.run.plan import plan_episode
from celmask.tasks.run.shot import cached_summary, run_shot, settings_key
from celmask.tasks.segment import model_sets
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_sets import BUILTIN_DETECTOR, build_models, model_ids
from celmask.tasks.video import probe


@pytest.fixture(scope="module")
def first(finished):
    """(video, episode dir, first shot, its fingerprint, settings hash, model ids) of the finished episode."""
    plan, _ = plan_episode(finished.video, finished.episode, finished.settings)
    config = apply(SegmentConfig(), finished.settings)
    shot = plan.shots[0]
    key = (probe(finished.video).fingerprint, settings_key(config), model_ids(config))
    return finished.video, finished.episode, shot, *key


def test_the_recorded_key_is_a_hit(first):
    _, episode, shot, fingerprint, settings, ids = first
    assert cached_summary(episode, shot, fingerprint, settings, ids) is not None


def test_each_part_of_the_key_changed_alone_recomputes(first):
    _, episode, shot, fingerprint, settings, ids = first
    assert cached_summary(episode, shot, "0" * 64, settings, ids) is None  # other video content
    assert cached_summary(episode, shot, fingerprint, "0" * 64, ids) is None  # other settings
    other_weights = {**ids, "detector": ids["detector"].rpartition(":")[0] + ":" + "0" * 64}
    assert cached_summary(episode, shot, fingerprint, settings, other_weights) is None
    assert cached_summary(episode, replace(shot, end=shot.end - 1), fingerprint, settings, ids) is None


def test_the_same_content_at_another_path_is_a_hit(first, tmp_path):
    """The video and the detector's weights copied elsewhere: the same key, no work."""
    video, episode, shot, *_ = first
    moved = shutil.copy(video, tmp_path / "renamed.mp4")
    weights = shutil.copy(BUILTIN_DETECTOR, tmp_path / "detector.pt")
    settings = {"work_size": 320, "detector.weights": str(weights)}
    outcome = run_shot(moved, shot, episode, settings)
    assert outcome.cached


def test_other_content_at_the_same_path_recomputes(first, tmp_path):
    """The same weights path, other bytes: another id; the same path, another video: another fingerprint."""
    video, *_ = first
    weights = tmp_path / "detector.pt"
    shutil.copy(BUILTIN_DETECTOR, weights)
    config = apply(SegmentConfig(), {"detector.weights": str(weights)})
    before = model_ids(config)
    with open(weights, "ab") as f:
        f.write(b"\0")
    after = model_ids(config)
    assert before["detector"] != after["detector"] and before["propagator"] == after["propagator"]
    copy = tmp_path / "episode.mp4"
    shutil.copy(video, copy)
    fingerprint = probe(copy).fingerprint
    with open(copy, "r+b") as f:  # one byte of the stream, the size kept
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert probe(copy).fingerprint != fingerprint


def test_a_settings_change_with_the_same_models_recomputes(first):
    video, episode, shot, fingerprint, settings, ids = first
    changed = apply(SegmentConfig(), {"work_size": 320, "keyframe": "confidence"})
    assert model_ids(changed) == ids and settings_key(changed) != settings
    assert cached_summary(episode, shot, fingerprint, settings_key(changed), ids) is None


def test_a_finished_shot_builds_no_model_and_takes_no_slot(first, monkeypatch):
    video, episode, shot, *_ = first
    monkeypatch.setattr(model_sets, "_IDLE", {})
    taken = []

    @contextlib.contextmanager
    def slot():
        taken.append(shot.index)
        yield

    outcome = run_shot(video, shot, episode, {"work_size": 320}, slot=slot)
    assert outcome.cached and taken == [] and model_sets._IDLE == {}


def test_planned_ids_are_the_built_models_ids():
    config = SegmentConfig()
    assert build_models(config).ids == model_ids(config)
