"""Shot boundary scoring: matching cuts within a tolerance and gradual transitions by span."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.tasks.eval.shots import Boundary, score_boundaries

CUT = Boundary(100, 100, 100)
DISSOLVE = Boundary(220, 210, 230, "dissolve")


@pytest.mark.parametrize(
    ("detected", "tp", "fp", "fn"),
    [
        ([100, 220], 2, 0, 0),
        ([101, 212], 2, 0, 0),  # cut within one frame; anywhere inside the dissolve
        ([102, 220], 1, 1, 1),  # two frames off is a miss plus a false cut
        ([99, 100, 220], 2, 1, 0),  # one-to-one: the second hit on a cut is false
        ([], 0, 0, 2),
        ([50, 150], 0, 2, 2),
    ],
)
def test_score_boundaries(detected, tp, fp, fn):
    score = score_boundaries(detected, [CUT, DISSOLVE])
    assert (score.true_positives, score.false_positives, score.false_negatives) == (tp, fp, fn)


def test_f1_and_sum():
    a = score_boundaries([100], [CUT, DISSOLVE])
    b = score_boundaries([100, 220], [CUT, DISSOLVE])
    total = a + b
    assert (total.true_positives, total.false_negatives) == (3, 1)
    assert a.precision == 1.0 and a.recall == 0.5 and a.f1 == pytest.approx(2 / 3)
    assert score_boundaries([], []).f1 == 1.0


def test_score_holds():
    from celmask.tasks.eval.shots import score_holds

    held = np.array([False, True, True, False, True, False])
    score = score_holds(held, [(0, 3), (5, 6)])  # true runs: frames 1, 2 are held
    assert (score.true_positives, score.false_positives, score.false_negatives) == (2, 1, 0)
    assert (score.frames, score.drawings) == (6, 3)
    assert score.precision == pytest.approx(2 / 3) and score.recall == 1.0
    assert (score + score).true_positives == 4
