"""DAVIS-style scores of predicted character tracks against ground truth.

Per frame and object, the region similarity J (IoU) and the boundary F-measure F of
DAVIS (Perazzi et al., 2016; the ``davis2017-evaluation`` code): 1-px boundaries as
``seg2bmap`` draws them, matched within ``ceil(bound_th * image diagonal)`` pixels
(6 px at 640x360) by dilation with a disk. Plus temporal flicker: on a held drawing
the picture does not change, so neither should a mask.

Conventions of :func:`score_shot` / :func:`score_video`:

- track ids are per shot; predicted tracks are matched one-to-one to true tracks
  per shot, maximising IoU summed over the shot's frames (Hungarian); a pair with
  no overlap at all is never matched;
- a true track is scored on every frame where it *or its matched prediction* is
  present: both present gives that frame's J and F, one present gives 0, and frames
  where both are absent are not counted. (DAVIS counts empty-vs-empty frames as 1
  instead, which rewards a missed character that is on screen for a short part of
  a long shot.) An unmatched true track scores 0 on every frame it is visible;
- J and F are means over true tracks of their per-frame means (DAVIS averages per
  object first, so a long track does not outweigh a short one); J&F is their mean;
- unmatched predicted tracks are false positives, reported as a count and as
  their share of all predicted pixels, not folded into J and F;
- flicker is the mean of ``1 - IoU(pred_t, pred_t+1)`` over every predicted track
  (matched or not) and every consecutive frame pair inside one held run of the
  truth, where the track is present in at least one of the two frames (appearing
  or vanishing on a held drawing counts 1);
- a mask with no pixels is the same as no mask; a score with nothing to average
  is NaN.

Everything streams: one frame of masks at a time, per-shot sums, no episode in
memory. Masks are cropped to a window around them, so the cost follows the size
of the characters, not of the frame.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import NamedTuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

BOUND_TH = 0.008
"""DAVIS's boundary tolerance: a share of the image diagonal (>= 1: pixels)."""


class FrameMasks(NamedTuple):
    """One frame's masks, as :func:`celmask.tasks.synth.iter_truth_masks` yields them."""

    frame_index: int
    track_ids: np.ndarray
    """(n,) int track ids, unique in the frame (per shot; see :func:`score_video`)."""
    masks: np.ndarray
    """(n, H, W) bool."""


# ------------------------------------------------------------------ one mask, one pair


def tolerance_px(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Boundary match distance in pixels, as DAVIS computes it."""
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width))


@lru_cache(maxsize=8)
def _disk(radius: int) -> np.ndarray:
    """skimage's ``disk(radius)`` (what DAVIS dilates with) as a cv2 kernel."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


@dataclass(frozen=True)
class _Shape:
    """A non-empty mask cut to its box widened by the tolerance + 1 (all its boundary
    pixels and their tolerance disks lie inside), with what J and F need."""

    y0: int
    x0: int
    mask: np.ndarray
    boundary: np.ndarray
    radius: int
    area: int
    n_boundary: int

    @cached_property
    def near(self) -> np.ndarray:
        """``boundary`` dilated by the tolerance disk; the costliest part, made only
        for masks some other mask comes near."""
        return cv2.dilate(self.boundary.view(np.uint8), _disk(self.radius)).view(bool)


def _seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS ``seg2bmap`` at full size: a pixel is boundary when it differs from its
    east, south or south-east neighbour; the image's own edge is no boundary."""
    b = np.zeros_like(seg)
    b[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    b[:-1, :] |= seg[:-1, :] != seg[1:, :]
    b[:-1, :-1] |= seg[:-1, :-1] != seg[1:, 1:]
    b[-1, -1] = False
    return b


def _shape(mask: np.ndarray, radius: int) -> _Shape | None:
    """``mask`` (H, W bool) as a :class:`_Shape`; None when it has no pixels. The window
    keeps >= 1 empty pixel around the mask (or the image edge), so its boundary is
    exactly the full-frame one."""
    x, y, w, h = _box(mask)
    if w == 0:
        return None
    pad = radius + 1
    height, width = mask.shape
    y0, x0 = max(0, y - pad), max(0, x - pad)
    crop = mask[y0 : min(height, y + h + pad), x0 : min(width, x + w + pad)].copy()  # the caller may reuse its buffer
    boundary = _seg2bmap(crop)
    return _Shape(y0, x0, crop, boundary, radius, int(np.count_nonzero(crop)), int(np.count_nonzero(boundary)))


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the set pixels of an (H, W) bool mask, w = 0 when none. A
    Fortran-ordered mask (pycocotools decodes so) goes through its transpose, uncopied."""
    if mask.flags.f_contiguous and not mask.flags.c_contiguous:
        y, x, h, w = cv2.boundingRect(mask.T.view(np.uint8))
        return x, y, w, h
    return cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))


def _common(a: _Shape, b: _Shape) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The slices of ``a``'s and ``b``'s windows over their overlap; None if they do not overlap."""
    y0, x0 = max(a.y0, b.y0), max(a.x0, b.x0)
    y1 = min(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
    x1 = min(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return (
        (slice(y0 - a.y0, y1 - a.y0), slice(x0 - a.x0, x1 - a.x0)),
        (slice(y0 - b.y0, y1 - b.y0), slice(x0 - b.x0, x1 - b.x0)),
    )


def _iou(a: _Shape | None, b: _Shape | None) -> float:
    if a is None or b is None:
        return float(a is b)
    common = _common(a, b)
    inter = 0 if common is None else int(np.count_nonzero(a.mask[common[0]] & b.mask[common[1]]))
    return inter / (a.area + b.area - inter)


def _f(pred: _Shape | None, true: _Shape | None) -> float:
    """DAVIS ``f_measure``; a missing mask has no boundary."""
    n_pred = 0 if pred is None else pred.n_boundary
    n_true = 0 if true is None else true.n_boundary
    if n_pred == 0 or n_true == 0:
        return float(n_pred == n_true)
    common = _common(pred, true)
    if common is None:
        return 0.0
    precision = int(np.count_nonzero(pred.boundary[common[0]] & true.near[common[1]])) / n_pred
    recall = int(np.count_nonzero(true.boundary[common[1]] & pred.near[common[0]])) / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def region_j(pred: np.ndarray, true: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    return _iou(_shape(pred, 0), _shape(true, 0))


def boundary_f(pred: np.ndarray, true: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS boundary F-measure of two (H, W) bool masks; 1.0 when both are empty,
    0.0 when one is."""
    radius = tolerance_px(*true.shape, bound_th)
    return _f(_shape(pred, radius), _shape(true, radius))


# ------------------------------------------------------------------ scores


@dataclass(frozen=True)
class TrackScore:
    """One true track's sums over the frames it is scored on."""

    shot_start: int
    """First frame of its shot (track ids are per shot)."""
    track_id: int
    matched: int | None
    """The predicted track matched to it, if any."""
    frames: int
    """Frames scored: where it or its match is present."""
    j_sum: float
    f_sum: float

    @property
    def j(self) -> float:
        return self.j_sum / self.frames if self.frames else math.nan

    @property
    def f(self) -> float:
        return self.f_sum / self.frames if self.frames else math.nan


@dataclass(frozen=True)
class SegScore:
    """Scores of a shot or of several (:meth:`combine`); sums, so they add up exactly."""

    tracks: tuple[TrackScore, ...]
    pred_tracks: int
    fp_tracks: int
    """Predicted tracks matched to no true track."""
    pred_pixels: int
    fp_pixels: int
    """Pixels (summed over frames) of the unmatched predicted tracks."""
    flicker_sum: float
    flicker_pairs: int

    @property
    def j(self) -> float:
        """Mean J over true tracks."""
        return float(np.mean([t.j for t in self.tracks])) if self.tracks else math.nan

    @property
    def f(self) -> float:
        """Mean F over true tracks."""
        return float(np.mean([t.f for t in self.tracks])) if self.tracks else math.nan

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    @property
    def flicker(self) -> float:
        """Mean ``1 - IoU`` of a predicted mask between consecutive held frames."""
        return self.flicker_sum / self.flicker_pairs if self.flicker_pairs else math.nan

    @property
    def fp_pixel_share(self) -> float:
        return self.fp_pixels / self.pred_pixels if self.pred_pixels else 0.0

    @classmethod
    def combine(cls, scores: Iterable[SegScore]) -> SegScore:
        scores = list(scores)
        return cls(
            tracks=tuple(t for s in scores for t in s.tracks),
            pred_tracks=sum(s.pred_tracks for s in scores),
            fp_tracks=sum(s.fp_tracks for s in scores),
            pred_pixels=sum(s.pred_pixels for s in scores),
            fp_pixels=sum(s.fp_pixels for s in scores),
            flicker_sum=sum(s.flicker_sum for s in scores),
            flicker_pairs=sum(s.flicker_pairs for s in scores),
        )


class _ShotTally:
    """Per-shot running sums, fed one frame at a time: per (pred, true) pair the frames
    both are present and their J and F sums; per track its frames; flicker."""

    def __init__(self, held_from: frozenset[int], bound_th: float, with_f: bool = True) -> None:
        self.held_from = held_from
        """Frames t whose successor t + 1 shows the same drawing."""
        self.bound_th = bound_th
        self.with_f = with_f
        self.shot_start: int | None = None
        self.radius = 0
        self.j_sum: defaultdict[tuple[int, int], float] = defaultdict(float)
        self.f_sum: defaultdict[tuple[int, int], float] = defaultdict(float)
        self.both: defaultdict[tuple[int, int], int] = defaultdict(int)
        self.true_frames: defaultdict[int, int] = defaultdict(int)
        self.pred_frames: defaultdict[int, int] = defaultdict(int)
        self.pred_pixels: defaultdict[int, int] = defaultdict(int)
        self.flicker_sum = 0.0
        self.flicker_pairs = 0
        self.prev_index = -2
        self.prev: dict[int, _Shape] = {}

    def add(self, pred: FrameMasks, true: FrameMasks) -> None:
        index = int(true.frame_index)
        if int(pred.frame_index) != index:
            raise ValueError(f"predicted and true frames must come in step, got {pred.frame_index} and {index}")
        if self.shot_start is None:
            self.shot_start = index
            self.radius = tolerance_px(*true.masks.shape[1:], self.bound_th)
        preds = self._shapes(pred)
        trues = self._shapes(true)
        for p, ps in preds.items():
            self.pred_frames[p] += 1
            self.pred_pixels[p] += ps.area
        for t in trues:
            self.true_frames[t] += 1
        for p, ps in preds.items():
            for t, ts in trues.items():
                self.both[p, t] += 1
                if _common(ps, ts) is not None:  # else J = F = 0 exactly
                    self.j_sum[p, t] += _iou(ps, ts)
                    if self.with_f:
                        self.f_sum[p, t] += _f(ps, ts)
        if self.prev_index == index - 1 and self.prev_index in self.held_from:
            for p in sorted(self.prev.keys() | preds.keys()):
                self.flicker_sum += 1.0 - _iou(self.prev.get(p), preds.get(p))
                self.flicker_pairs += 1
        self.prev_index, self.prev = index, preds

    def _shapes(self, frame: FrameMasks) -> dict[int, _Shape]:
        ids = [int(i) for i in frame.track_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"frame {frame.frame_index}: track ids {ids} repeat")
        shapes = {i: _shape(m, self.radius) for i, m in zip(ids, frame.masks)}
        return {i: s for i, s in shapes.items() if s is not None}

    def matches(self) -> dict[int, int]:
        """Predicted -> true track, one-to-one, maximising the summed IoU."""
        preds, trues = sorted(self.pred_frames), sorted(self.true_frames)
        gain = np.array([[self.j_sum.get((p, t), 0.0) for t in trues] for p in preds]).reshape(len(preds), len(trues))
        rows, cols = linear_sum_assignment(gain, maximize=True)
        return {preds[r]: trues[c] for r, c in zip(rows, cols) if gain[r, c] > 0}

    def score(self) -> SegScore:
        matched = {t: p for p, t in self.matches().items()}
        tracks = []
        for t, n in sorted(self.true_frames.items()):
            p = matched.get(t)
            if p is None:
                tracks.append(TrackScore(self.shot_start, t, None, n, 0.0, 0.0))
            else:
                frames = n + self.pred_frames[p] - self.both[p, t]
                tracks.append(TrackScore(self.shot_start, t, p, frames, self.j_sum[p, t], self.f_sum[p, t]))
        unmatched = [p for p in self.pred_frames if p not in matched.values()]
        return SegScore(
            tracks=tuple(tracks),
            pred_tracks=len(self.pred_frames),
            fp_tracks=len(unmatched),
            pred_pixels=sum(self.pred_pixels.values()),
            fp_pixels=sum(self.pred_pixels[p] for p in unmatched),
            flicker_sum=self.flicker_sum,
            flicker_pairs=self.flicker_pairs,
        )


def _held_from(held_runs: Iterable[tuple[int, int]]) -> frozenset[int]:
    return frozenset(t for start, end in held_runs for t in range(start, end - 1))


def match_tracks(pred: Iterable[FrameMasks], truth: Iterable[FrameMasks]) -> dict[int, int]:
    """Predicted track id -> true track id for one shot's frames (both streams frame
    by frame, in step): one-to-one, maximising IoU summed over the frames; tracks that
    overlap nothing stay unmatched."""
    tally = _ShotTally(frozenset(), BOUND_TH, with_f=False)
    for p, t in zip(pred, truth, strict=True):
        tally.add(FrameMasks(*p), FrameMasks(*t))
    return tally.matches()


def score_shot(
    pred: Iterable[FrameMasks],
    truth: Iterable[FrameMasks],
    held_runs: Iterable[tuple[int, int]] = (),
    *,
    bound_th: float = BOUND_TH,
) -> SegScore:
    """Score one shot: ``pred`` and ``truth`` give every frame of it in order (frames
    without masks too), ``held_runs`` the true held runs ``[start, end)``."""
    return score_video(pred, truth, held_runs, (), bound_th=bound_th)


def score_video(
    pred: Iterable[FrameMasks],
    truth: Iterable[FrameMasks],
    held_runs: Iterable[tuple[int, int]],
    shots: Sequence[tuple[int, int]],
    *,
    bound_th: float = BOUND_TH,
) -> SegScore:
    """Score a video shot by shot: ``pred`` and ``truth`` give every frame in order, in
    step (e.g. :func:`celmask.tasks.synth.iter_truth_masks`); ``shots`` are the true shots
    ``[start, end)``, where tracks are matched afresh. Predicted track ids must be
    unique within a true shot: where the prediction's own shots differ from the
    truth's, key them by its shot too (e.g. ``shot * 100_000 + track``)."""
    held_from = _held_from(held_runs)
    starts = {start for start, _ in shots}
    scores: list[SegScore] = []
    tally = _ShotTally(held_from, bound_th)
    for p, t in zip(pred, truth, strict=True):
        t = FrameMasks(*t)
        if int(t.frame_index) in starts and tally.shot_start is not None:
            scores.append(tally.score())
            tally = _ShotTally(held_from, bound_th)
        tally.add(FrameMasks(*p), t)
    if tally.shot_start is not None:
        scores.append(tally.score())
    return SegScore.combine(scores)
