"""Held drawings: which frames repeat the previous drawing."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.tasks.shots.holds import HoldConfig, block_change, drawing_ids, held_runs


def test_drawing_ids_and_runs():
    held = np.array([False, True, True, False, False, True])
    assert drawing_ids(held).tolist() == [0, 0, 0, 1, 2, 2]
    assert held_runs(held) == [(0, 3), (4, 6)]
    assert held_runs(held, offset=10) == [(10, 13), (14, 16)]
    assert held_runs(np.zeros(0, bool)) == []


def test_block_change_sees_small_local_change_but_not_noise():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (90, 160), dtype=np.uint8)
    noisy = np.clip(frame.astype(int) + rng.integers(-2, 3, frame.shape), 0, 255).astype(np.uint8)
    assert block_change(frame, noisy) <= HoldConfig().threshold
    mouth = frame.copy()
    mouth[40:46, 70:78] = 255 - mouth[40:46, 70:78]  # a 6x8 px change: one block
    assert block_change(frame, mouth) > HoldConfig().threshold


def test_block_change_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        block_change(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
