"""Evidence: which tracks are characters, and which are a detector's noise.

A still-image detector's false positives (a wall, a sign, a patch of water, blobs
on a flash frame) are mostly one-off or sporadic: seen on a few drawings of a shot,
often in shapes that do not hold from one drawing to the next. The tracker links
whatever overlaps, so without a test each of them would become a track with masks
propagated over the whole shot. A track is kept only when its detections are
evidence of one character:

- **support**: detected on at least ``min_share`` of the shot's unique drawings
  (drawings, not frames: a drawing held for 3 frames is one look), and on at least
  ``min_drawings`` of them; a shot with fewer drawings than that needs all of them,
  so a one-drawing shot keeps what was found on it;
- **consistency**: detected on at least ``min_density`` of the drawings between its
  first and last detection, not on a scatter the tracker's gap bridging strung
  together;
- **a stable shape**: consecutive detections, moved onto each other's centre, overlap
  by ``min_shape_iou`` (median over the track): a character keeps its silhouette
  while it moves or is redrawn, noise does not;
- **not a frame-filling blob**: its median mask covers at most ``max_area`` of the
  frame (a character close-up stays under it, the background does not).

Tracks without that evidence are dropped (their detections removed), the others
renumbered from 0 in the order they first appear, so ids stay stable for the same
input. Everything is measured on the detections, before propagation, so noise costs
no propagation or refinement either. What no such test can tell from a character is
a false positive the detector makes on every drawing (the same window of a house
all through a shot): that takes a better detector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, NamedTuple

import numpy as np

from celmask.tasks.core.config import SHARE, Range, check_rules
from celmask.tasks.core.instances import Instances


@dataclass(frozen=True)
class EvidenceConfig:
    min_share: Annotated[float, SHARE] = 0.15
    """Share of the shot's unique drawings a track must be detected on (a character
    that is on screen for less of the shot is dropped with the noise)."""
    min_drawings: Annotated[int, Range(1)] = 2
    """Fewest drawings a track must be detected on, whatever the shot's length: a
    detection seen once is no evidence (a shot with fewer drawings needs all of them)."""
    min_density: Annotated[float, SHARE] = 0.5
    """Share of the drawings from a track's first to its last detection that it must be
    detected on: consistent detections, not a scatter bridged by the tracker's gaps."""
    min_shape_iou: Annotated[float, SHARE] = 0.3
    """Median overlap of consecutive detections moved onto each other's centre: a
    character keeps its silhouette from drawing to drawing, noise does not."""
    max_area: Annotated[float, SHARE] = 0.9
    """Largest share of the frame a track's median mask may cover (more is the
    background, not a character)."""

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass(frozen=True)
class TrackEvidence:
    """What a track's detections show."""

    first: int
    last: int
    """Its first and last drawing (index among the shot's unique drawings)."""
    drawings: int
    """Drawings it was detected on."""
    shape_iou: float
    """Median centred overlap of consecutive detections (1.0 when seen once)."""
    area: float
    """Median share of the frame its masks cover."""

    @property
    def span(self) -> int:
        """Drawings from its first to its last detection, both included."""
        return self.last - self.first + 1


def needed_drawings(shot_drawings: int, config: EvidenceConfig) -> int:
    """Drawings a track of a shot with ``shot_drawings`` unique drawings must be detected on."""
    share = math.ceil(config.min_share * shot_drawings - 1e-9)  # 0.15 * 20 is 3.0000000000000004
    return min(shot_drawings, max(config.min_drawings, share))


class _Shape(NamedTuple):
    """A mask cropped to its box: the crop, where it sits, its centre of mass, its area."""

    crop: np.ndarray
    y: int
    x: int
    centre: tuple[int, int]
    """(y, x) in the frame, rounded to whole pixels."""
    area: int


def _shape(mask: np.ndarray) -> _Shape | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ys, xs = np.nonzero(crop)
    return _Shape(crop, int(rows[0]), int(cols[0]), (rows[0] + round(ys.mean()), cols[0] + round(xs.mean())), len(ys))


def _centred_iou(a: _Shape | None, b: _Shape | None) -> float:
    """IoU of ``a`` moved so its centre of mass is ``b``'s, with ``b``: likeness of
    shape, whatever the motion; 0 when one is empty."""
    if a is None or b is None:
        return 0.0
    ay, ax = a.y + b.centre[0] - a.centre[0], a.x + b.centre[1] - a.centre[1]
    y0, y1 = max(ay, b.y), min(ay + a.crop.shape[0], b.y + b.crop.shape[0])
    x0, x1 = max(ax, b.x), min(ax + a.crop.shape[1], b.x + b.crop.shape[1])
    inter = 0
    if y0 < y1 and x0 < x1:
        inter = int(
            (a.crop[y0 - ay : y1 - ay, x0 - ax : x1 - ax] & b.crop[y0 - b.y : y1 - b.y, x0 - b.x : x1 - b.x]).sum()
        )
    return inter / (a.area + b.area - inter)


def track_evidence(tracked: Sequence[Instances]) -> dict[int, TrackEvidence]:
    """Track id -> its evidence, over ``tracked`` (one Instances per unique drawing,
    in order, ``track_id`` set; a track has at most one row per drawing)."""
    steps: dict[int, list[int]] = {}
    shapes: dict[int, list[_Shape | None]] = {}
    for step, inst in enumerate(tracked):
        for row, track in enumerate(inst.track_id.tolist()):
            steps.setdefault(track, []).append(step)
            shapes.setdefault(track, []).append(_shape(inst.mask[row]))
    pixels = tracked[0].size[0] * tracked[0].size[1] if tracked else 1
    out = {}
    for track, seen in steps.items():
        m = shapes[track]
        overlap = [_centred_iou(a, b) for a, b in zip(m, m[1:])]
        out[track] = TrackEvidence(
            first=seen[0],
            last=seen[-1],
            drawings=len(seen),
            shape_iou=float(np.median(overlap)) if overlap else 1.0,
            area=float(np.median([0 if x is None else x.area for x in m])) / pixels,
        )
    return out


def has_evidence(evidence: TrackEvidence, shot_drawings: int, config: EvidenceConfig) -> bool:
    """Whether a track with ``evidence`` in a shot of ``shot_drawings`` unique drawings is kept."""
    return (
        evidence.drawings >= needed_drawings(shot_drawings, config)
        and evidence.drawings >= config.min_density * evidence.span
        and evidence.shape_iou >= config.min_shape_iou
        and evidence.area <= config.max_area
    )


def keep_evidenced(tracked: Sequence[Instances], config: EvidenceConfig = EvidenceConfig()) -> list[Instances]:
    """``tracked`` without the rows of tracks that lack evidence, the rest renumbered
    from 0 in the order they first appear."""
    evidence = track_evidence(tracked)
    kept = sorted(
        (t for t, e in evidence.items() if has_evidence(e, len(tracked), config)), key=lambda t: (evidence[t].first, t)
    )
    renumber = {old: new for new, old in enumerate(kept)}
    out = []
    for inst in tracked:
        rows = inst[np.array([t in renumber for t in inst.track_id.tolist()], bool)]
        out.append(
            Instances(
                rows.mask,
                rows.xyxy,
                rows.score,
                rows.class_id,
                np.array([renumber[t] for t in rows.track_id.tolist()], np.int32),
                rows.data,
            )
        )
    return out
