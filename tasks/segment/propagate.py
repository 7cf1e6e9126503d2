"""Forward and reverse propagation of every track from its keyframe.

For each track: propagate its keyframe mask forward to the end of the track's
reach and backward (frames in reverse order) to its start, each step fused with
that drawing's own detection of the track (a :class:`~celmask.models.propagators.base.Guide`).
When the propagated mask's confidence decays below ``rekey_below`` and the
detector saw the track again later, the best-scoring later drawing becomes a new
keyframe: propagation restarts from it both ways, and each drawing keeps the
answer it trusts most. A propagated mask that keeps disagreeing with the drawings
own detections loses confidence quickly, so drift hands over to the detector. A
track reaches ``extend`` drawings beyond the first and
last drawings it was detected on (detector misses at its ends), no further: a
character that is not there should not be carried there by the flow. Where the
propagated mask is trusted less than ``rekey_below`` but the drawing has its own
detection of the track (a flash, a smear the flow cannot follow), the detection
stands.

Works on unique drawings only; the caller copies results to held frames. The tracks
of a shot go over the same drawings: inside :func:`sharing` a propagator that can
(optical flow) computes the flow between two drawings once for every track and both
directions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from celmask.models.propagators.base import Guide, Propagator
from celmask.tasks.core.config import NON_NEGATIVE, SHARE, check_rules
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.segment.keyframes import Candidate, choose


@dataclass(frozen=True)
class PropagationConfig:
    rekey_below: Annotated[float, SHARE] = 0.35
    """Confidence under which a later detection of the track becomes a new keyframe."""
    stop_below: Annotated[float, SHARE] = 0.1
    """Confidence under which a propagated mask is dropped (the track is not shown)."""
    extend: Annotated[int, NON_NEGATIVE] = 3
    """Drawings a track is carried beyond the first/last drawing it was detected on."""
    disagree_iou: Annotated[float, SHARE] = 0.5
    """A drawing's detection of the track that overlaps the propagated mask less than
    this disagrees with it: drift, or a bad detection."""
    disagree_factor: Annotated[float, SHARE] = 0.5
    """Confidence factor per disagreeing drawing in a row (an agreeing one resets it),
    so propagation that keeps contradicting the detector hands over to it."""

    def __post_init__(self) -> None:
        check_rules(self)
        if self.stop_below > self.rekey_below:
            raise ValueError(
                f"propagation.stop_below ({self.stop_below}) must not exceed propagation.rekey_below "
                f"({self.rekey_below})"
            )


@dataclass
class TrackMasks:
    """The propagated masks of one track, per drawing step it reaches."""

    track_id: int
    mask: dict[int, np.ndarray]
    confidence: dict[int, float]
    keyframe: dict[int, int]
    """step -> the keyframe step its mask came from (its own step where the detection stands)."""
    keyframes: list[Candidate]
    detected: set[int]
    """Steps whose mask is the drawing's own detection rather than a propagated one."""


def sharing(propagator: Propagator) -> contextlib.AbstractContextManager[object]:
    """Context in which ``propagator`` shares work between propagations over the same
    drawing arrays (one shot's), if it can (a ``sharing()`` method); inside one already,
    nothing more (that one goes on)."""
    share = getattr(propagator, "sharing", None)
    if share is None or getattr(propagator, "shared", None) is not None:
        return contextlib.nullcontext()
    return share()


def _observed(tracked: Sequence[Instances], track_id: int) -> dict[int, int]:
    """step -> row of ``track_id`` in ``tracked[step]``."""
    out = {}
    for step, inst in enumerate(tracked):
        rows = np.flatnonzero(inst.track_id == track_id)
        if len(rows):
            out[step] = int(rows[0])
    return out


def _run(
    propagator: Propagator,
    images: Sequence[np.ndarray],
    tracked: Sequence[Instances],
    seen: dict[int, int],
    key: int,
    steps: list[int],
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Propagate the track's mask at drawing ``key`` through ``steps`` (in order, away
    from ``key``), lazily: the caller stops when confidence is gone."""
    start = tracked[key].mask[seen[key]][None]
    frames = [images[key]] + [images[s] for s in steps]
    guides: list[Guide | None] = [None]
    for s in steps:
        if s in seen:
            guides.append(Guide(mask=tracked[s].mask[seen[s]][None], present=np.ones(1, bool)))
        else:
            guides.append(Guide(mask=np.zeros_like(start), present=np.zeros(1, bool)))
    for s, (m, c) in zip(steps, propagator.propagate(frames, start, guides)):
        yield s, m[0], float(c[0])


def propagate_track(
    propagator: Propagator,
    images: Sequence[np.ndarray],
    tracked: Sequence[Instances],
    candidates: Sequence[Candidate],
    method: str,
    config: PropagationConfig = PropagationConfig(),
) -> TrackMasks:
    """Masks of the track of ``candidates`` on every drawing it reaches (its flows shared
    across its directions and keyframes; with the shot's other tracks inside :func:`sharing`)."""
    with sharing(propagator):
        return _propagate_track(propagator, images, tracked, candidates, method, config)


def _propagate_track(
    propagator: Propagator,
    images: Sequence[np.ndarray],
    tracked: Sequence[Instances],
    candidates: Sequence[Candidate],
    method: str,
    config: PropagationConfig,
) -> TrackMasks:
    track_id = candidates[0].track_id
    seen = _observed(tracked, track_id)
    first = max(0, min(seen) - config.extend)
    last = min(len(images) - 1, max(seen) + config.extend)
    result = TrackMasks(track_id, {}, {}, {}, [], set())

    def keep(step: int, mask: np.ndarray, confidence: float, key: int) -> None:
        if not mask.any():
            confidence = 0.0  # an empty answer is no answer: the detection, if any, stands
        if confidence > result.confidence.get(step, -1.0):
            result.mask[step], result.confidence[step], result.keyframe[step] = mask, confidence, key

    def from_key(key_candidate: Candidate, low: int, high: int) -> None:
        """Propagate from a keyframe back to ``low`` and on to ``high`` (inclusive),
        re-keying where confidence decays and a later detection exists."""
        key = key_candidate.step
        result.keyframes.append(key_candidate)
        keep(key, tracked[key].mask[seen[key]], 1.0, key)
        for direction, bound in ((-1, low), (1, high)):
            steps = list(range(key + direction, bound + direction, direction))
            penalty = 1.0
            for step, mask, confidence in _run(propagator, images, tracked, seen, key, steps):
                if step in seen:
                    agree = mask_iou(mask[None], tracked[step].mask[seen[step]][None])[0, 0] >= config.disagree_iou
                    penalty = 1.0 if agree else penalty * config.disagree_factor
                confidence *= penalty
                keep(step, mask, confidence, key)
                if confidence < config.rekey_below:
                    ahead = [
                        c
                        for c in candidates
                        if (c.step - step) * direction > 0 and c.step * direction <= bound * direction
                    ]
                    if ahead:
                        nxt = choose(ahead, method)
                        lo, hi = (step, bound) if direction > 0 else (bound, step)
                        from_key(nxt, lo, hi)
                        break
                if confidence < config.stop_below:
                    break

    from_key(choose(candidates, method), first, last)
    for step, row in seen.items():
        if result.confidence.get(step, 0.0) < config.rekey_below:
            keep(step, tracked[step].mask[row], config.rekey_below, step)
    result.detected = {c.step for c in result.keyframes} | {s for s in seen if result.keyframe.get(s) == s}
    for step in [s for s, c in result.confidence.items() if c < config.stop_below or not result.mask[s].any()]:
        del result.mask[step], result.confidence[step], result.keyframe[step]
    return result
