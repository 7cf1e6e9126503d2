"""The shot detector's rules on hand-made frame sequences (no video files)."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.tasks.shots.detect import ShotConfig, ShotDetector
from tests.support.scenes import SHOT_SIZE, held
from tests.support.scenes import flat_set as scene

H, W = SHOT_SIZE


def run(frames: list[np.ndarray], **config) -> list[tuple[int, str]]:
    """The rules' shots (the learned second opinion has its own tests: test_learned.py)."""
    detector = ShotDetector(ShotConfig(**{"learned": "never", **config}))
    for i, frame in enumerate(frames):
        detector.push(i / 24, frame)
    return [(s.start, s.transition) for s in detector.finish().shots]


def test_hard_cut():
    assert run(held(scene(1), 30) + held(scene(2), 30)) == [(0, "start"), (30, "cut")]


@pytest.mark.parametrize("value", [0, 255])
@pytest.mark.parametrize("length", [1, 2, 3])
def test_flash_frames_do_not_cut(value, length):
    a = scene(1)
    flash = np.full_like(a, value)
    assert run(held(a, 20) + held(flash, length) + held(a, 20)) == [(0, "start")]


def test_dissolve():
    a, b = scene(1).astype(np.float32), scene(2).astype(np.float32)
    mix = [((1 - t) * a + t * b).round().astype(np.uint8) for t in np.linspace(0, 1, 18)[1:-1]]
    shots = run(held(a.astype(np.uint8), 30) + mix + held(b.astype(np.uint8), 30))
    assert [k for _, k in shots] == ["start", "dissolve"]
    assert 30 <= shots[1][0] < 30 + len(mix)


def test_fade_through_black():
    a, b = scene(1).astype(np.float32), scene(2).astype(np.float32)
    out = [(a * t).astype(np.uint8) for t in np.linspace(1, 0, 10)[1:]]
    black = held(np.zeros_like(a, np.uint8), 3)
    into = [(b * t).astype(np.uint8) for t in np.linspace(0, 1, 10)[1:-1]]
    shots = run(held(a.astype(np.uint8), 30) + out + black + into + held(b.astype(np.uint8), 30))
    assert [k for _, k in shots] == ["start", "fade"]
    assert 30 <= shots[1][0] < 30 + len(out) + len(black) + len(into)


def test_camera_shake_and_pan_do_not_cut():
    rng = np.random.default_rng(3)
    big = np.concatenate([scene(1), scene(4), scene(5)], axis=1)  # a wide painted set
    frames = []
    for t in range(80):
        dx = 10 + 2 * t + int(rng.integers(-5, 6))  # pan plus shake (±20 px at 640 wide)
        dy = int(rng.integers(0, 5))
        frame = np.zeros((H, W, 3), np.uint8)
        frame[: H - dy] = big[dy:H, dx : dx + W]
        frames.append(frame)
    assert run(frames) == [(0, "start")]


def test_short_shots_merge_under_min_length():
    a, b, c = scene(1), scene(2), scene(3)
    shots = run(held(a, 30) + held(b, 3) + held(c, 30), min_shot_frames=8)
    assert len(shots) == 2


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="same_threshold"):
        ShotConfig(same_threshold=0.5, cut_threshold=0.3)
    with pytest.raises(ValueError, match="cut_threshold"):
        ShotConfig(cut_threshold=0)
