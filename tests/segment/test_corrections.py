"""Carrying a hand correction through a track's drawings: it replaces the run's masks
that share the corrected mask's lineage, and hands back where the run re-keyed,
jumped, or agrees with it again."""

from __future__ import annotations

import numpy as np

from celmask.models.propagators.optical_flow import OpticalFlowPropagator
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.segment.corrections import carry_corrections

H, W, STEPS = 72, 128, 10


def _square(step: int, shift: int = 0) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    x = 20 + 6 * step + shift
    mask[24:48, x : x + 24] = True
    return mask


def _images() -> list[np.ndarray]:
    out = []
    for step in range(STEPS):
        image = np.full((H, W, 3), 235, np.uint8)
        image[_square(step)] = (200, 40, 40)
        image[np.roll(_square(step), 1, axis=0) ^ _square(step)] = 20  # an outline below, as line art
        out.append(image)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(mask_iou(a[None], b[None])[0, 0])


def test_a_correction_replaces_its_lineage_and_stops_where_the_run_rekeyed():
    wrong = {s: _square(s, shift=14) for s in range(6)}  # the run slipped off, from keyframe 0
    right = {s: _square(s, shift=3) for s in range(6, STEPS)}  # a later keyframe, 6, nearly right
    keys = {s: 0 for s in wrong} | {s: 6 for s in right}
    carried = carry_corrections(OpticalFlowPropagator(), _images(), wrong | right, keys, {2: _square(2)})
    assert sorted(carried.mask) == [0, 1, 2, 3, 4, 5]
    assert all(_iou(carried.mask[s], _square(s)) > 0.8 for s in carried.mask)
    assert set(carried.keyframe.values()) == {2}


def test_a_correction_hands_back_where_the_run_agrees_again():
    run = {s: _square(s, shift=14) for s in range(4)} | {s: _square(s) for s in range(4, STEPS)}
    keys = dict.fromkeys(run, 0)  # one lineage, no jump: the run drifted back on its own
    carried = carry_corrections(OpticalFlowPropagator(), _images(), run, keys, {1: _square(1)})
    assert sorted(carried.mask) == [0, 1, 2, 3]


def test_a_correction_hands_back_where_the_run_jumped():
    run = {s: _square(s, shift=14) for s in range(5)} | {s: _square(s, shift=-9) for s in range(5, STEPS)}
    keys = dict.fromkeys(run, 0)  # one lineage, but a detection pulled the run over at 5
    carried = carry_corrections(OpticalFlowPropagator(), _images(), run, keys, {1: _square(1)})
    assert sorted(carried.mask) == [0, 1, 2, 3, 4]


def test_without_a_propagator_only_the_corrected_drawing_changes():
    carried = carry_corrections(None, _images(), {}, {}, {3: _square(3)})
    assert list(carried.mask) == [3] and carried.confidence[3] == 1.0
