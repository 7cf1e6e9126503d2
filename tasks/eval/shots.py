"""Score detected shot boundaries against ground truth.

A true hard cut is found by a detected boundary within ``tolerance`` frames of
it; a true gradual transition (fade, dissolve) by a detected boundary anywhere
inside its span (widened by the same tolerance). Matching is one-to-one, nearest
first. Used by the tests and by ``bench/shots.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Boundary:
    """A true shot boundary: the new shot's first frame and its transition span."""

    frame: int
    span_start: int
    span_end: int
    transition: str = "cut"


class _ShotLike(Protocol):
    start: int
    transition_start: int
    transition_end: int
    transition: str


def boundaries(shots: Sequence[_ShotLike]) -> list[Boundary]:
    """The boundaries of shots that tile a video (detected ``Shot`` or a generated
    episode's truth): every shot's start but the first's, with its transition span."""
    return [Boundary(s.start, s.transition_start, s.transition_end, s.transition) for s in shots[1:]]


class _PrecisionRecall:
    """Precision and recall from true/false positive and false negative counts (1.0
    where there is nothing to count)."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0


@dataclass(frozen=True)
class CutScore(_PrecisionRecall):
    true_positives: int
    false_positives: int
    false_negatives: int
    false_frames: tuple[int, ...] = ()
    """Detected boundaries that matched nothing."""
    missed_frames: tuple[int, ...] = ()
    """True boundaries nothing matched."""

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: CutScore) -> CutScore:
        return CutScore(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
            self.false_frames + other.false_frames,
            self.missed_frames + other.missed_frames,
        )


def score_boundaries(detected: Iterable[int], truth: Sequence[Boundary], tolerance: int = 1) -> CutScore:
    """Precision/recall of detected boundary frames against true boundaries."""
    detected = sorted(set(detected))
    pairs: list[tuple[int, int, int]] = []  # (distance, detected index, truth index)
    for i, d in enumerate(detected):
        for j, b in enumerate(truth):
            lo, hi = (b.frame - tolerance, b.frame + tolerance + 1)
            if b.span_end > b.span_start:
                lo, hi = b.span_start - tolerance, b.span_end + tolerance
            if lo <= d < hi:
                pairs.append((abs(d - b.frame), i, j))
    used_d: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
    return CutScore(
        true_positives=len(used_t),
        false_positives=len(detected) - len(used_d),
        false_negatives=len(truth) - len(used_t),
        false_frames=tuple(d for i, d in enumerate(detected) if i not in used_d),
        missed_frames=tuple(b.frame for j, b in enumerate(truth) if j not in used_t),
    )


@dataclass(frozen=True)
class HoldScore(_PrecisionRecall):
    """Held-frame flags against true runs of identical frames."""

    true_positives: int
    false_positives: int
    false_negatives: int
    frames: int
    drawings: int
    """Frames that are not held: the model calls later stages make."""

    def __add__(self, other: HoldScore) -> HoldScore:
        return HoldScore(*(a + b for a, b in zip(self._counts(), other._counts())))

    def _counts(self) -> tuple[int, ...]:
        return (self.true_positives, self.false_positives, self.false_negatives, self.frames, self.drawings)


def score_holds(held: np.ndarray, true_runs: Iterable[tuple[int, int]]) -> HoldScore:
    """Score (n,) bool "same drawing as the previous frame" flags against half-open
    runs ``[start, end)`` of identical frames (every frame of a run but its first is held)."""
    held = np.asarray(held, dtype=bool)
    truth = np.zeros(held.shape, dtype=bool)
    for a, b in true_runs:
        truth[a + 1 : b] = True
    return HoldScore(
        true_positives=int((held & truth).sum()),
        false_positives=int((held & ~truth).sum()),
        false_negatives=int((~held & truth).sum()),
        frames=int(held.size),
        drawings=int((~held).sum()),
    )
