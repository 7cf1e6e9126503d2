"""Tracks: which detections across a shot's drawings are the same character.

Detections arrive per unique drawing, in order. Each step is an optimal
assignment (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) between the
live tracks and the step's detections on an affinity that mixes mask overlap with
the track's last mask and the colour likeness of the two: overlap carries a
character from drawing to drawing; colour (anime characters wear fixed palettes)
keeps two crossing characters apart and re-attaches a character that reappears
after an occlusion or a short exit, when overlap alone has nothing to go on, as
long as it is about the same size and has not jumped across the frame. Before
comparing, the tracks' last masks follow the camera: a pan moves every character
by the same shift (phase correlation of the two drawings), which would otherwise
leave small characters with no overlap from one drawing to the next. Overlap is
taken with and without that shift (whichever is larger), since a close-up's own
motion can dominate the correlation.

Every detection gets a track; which tracks are characters and which are a
detector's noise is :mod:`.evidence`'s call. Ids count from 0 in the order tracks
first appear, so they are stable for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from celmask.tasks.core.config import NON_NEGATIVE, SHARE, Range, check_rules
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import mask_centre, mask_iou, shift_mask

HIST_BINS = (12, 4)
"""Hue x saturation bins of a track's colour signature."""


@dataclass(frozen=True)
class TrackConfig:
    min_iou: Annotated[float, SHARE] = 0.2
    """Mask overlap with a track's last mask that continues it on the next drawing."""
    min_colour_bridge: Annotated[float, SHARE] = 0.75
    """Colour likeness that continues a track without overlap (fast motion, reappearance)."""
    max_jump: Annotated[float, SHARE] = 0.2
    """Largest centre move, as a share of the frame diagonal, that colour alone may bridge."""
    max_size_change: Annotated[float, Range(1)] = 2.0
    """Largest area ratio (either way) that colour alone may bridge."""
    colour_weight: Annotated[float, SHARE] = 0.3
    """Share of colour likeness in the affinity (the rest is mask overlap)."""
    max_gap: Annotated[int, NON_NEGATIVE] = 12
    """Drawings a track may go undetected (occlusion, exit, detector miss) and still continue."""

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass
class _Track:
    id: int
    mask: np.ndarray
    """The last detected mask."""
    moved: np.ndarray
    """The same, moved with the camera since."""
    hist: np.ndarray
    centre: np.ndarray
    """Centre (x, y) of the last detected mask."""
    velocity: np.ndarray | None
    """Centre motion per drawing between its last two detections (None: seen once)."""
    area: int
    last_step: int


def colour_signature(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised hue-saturation histogram (sums to 1) of ``image``'s pixels under ``mask``
    (only the mask's box is converted to HSV)."""
    mask = np.asarray(mask, bool).view(np.uint8)
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return np.zeros(HIST_BINS[0] * HIST_BINS[1], np.float32)
    hsv = cv2.cvtColor(image[y : y + h, x : x + w], cv2.COLOR_RGB2HSV)
    box = mask[y : y + h, x : x + w]
    hist = cv2.calcHist([hsv], [0, 1], box, list(HIST_BINS), [0, 180, 0, 256]).ravel()
    total = hist.sum()
    return hist / total if total > 0 else hist


MIN_SHIFT_RESPONSE = 0.1
"""Phase-correlation peak below which there is no clear common motion (flat frames)."""


def camera_shift(previous: np.ndarray, current: np.ndarray, width: int = 160) -> tuple[float, float]:
    """(dx, dy) in pixels of ``current`` (RGB) relative to ``previous``: the camera's pan
    between two drawings, by phase correlation at ``width`` pixels wide; (0, 0) when
    the correlation has no clear peak."""
    h, w = current.shape[:2]
    size = (width, max(8, round(width * h / w)))
    a, b = (
        cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA).astype(np.float32)
        for x in (previous, current)
    )
    (dx, dy), response = cv2.phaseCorrelate(a, b)
    if not response >= MIN_SHIFT_RESPONSE:
        return 0.0, 0.0
    return dx * w / size[0], dy * h / size[1]


def assign_tracks(
    images: Sequence[np.ndarray], detections: Sequence[Instances], config: TrackConfig = TrackConfig()
) -> list[Instances]:
    """``detections[i]`` of ``images[i]`` (one per unique drawing, in order) with
    ``track_id`` set on every row."""
    if len(images) != len(detections):
        raise ValueError(f"need one image per detections, got {len(images)} and {len(detections)}")
    tracks: list[_Track] = []
    ids_per_step: list[np.ndarray] = []
    for step, (image, inst) in enumerate(zip(images, detections)):
        h, w = inst.size
        diagonal = float(np.hypot(h, w))
        live = [t for t in tracks if step - t.last_step <= config.max_gap + 1]
        pan = np.array(camera_shift(images[step - 1], image)) if step > 0 and live else np.zeros(2)
        for t in live:  # predicted position: own velocity, else the camera's pan
            t.moved = shift_mask(t.moved, *(pan if t.velocity is None else t.velocity))
        hists = [colour_signature(image, m) for m in inst.mask]
        centres = [mask_centre(m) for m in inst.mask]
        areas = inst.area
        ids = np.full(len(inst), -1, np.int64)
        if live and len(inst):
            iou = np.maximum(
                mask_iou(np.stack([t.mask for t in live]), inst.mask),
                mask_iou(np.stack([t.moved for t in live]), inst.mask),
            )
            colour = np.array([[np.minimum(t.hist, hd).sum() for hd in hists] for t in live])
            expected = [mask_centre(t.moved) for t in live]
            jump = np.array([[np.hypot(*(e - c)) / diagonal for c in centres] for e in expected])
            ratio = np.array([[max(t.area, a) / max(1, min(t.area, a)) for a in areas] for t in live])
            bridge = (
                (colour >= config.min_colour_bridge) & (jump <= config.max_jump) & (ratio <= config.max_size_change)
            )
            allowed = (iou >= config.min_iou) | bridge
            affinity = (1 - config.colour_weight) * iou + config.colour_weight * colour
            rows, cols = linear_sum_assignment(np.where(allowed, affinity, -1.0), maximize=True)
            for r, c in zip(rows, cols):
                if allowed[r, c]:
                    ids[c] = live[r].id
        for col in range(len(inst)):
            if ids[col] < 0:
                ids[col] = len(tracks)
                tracks.append(
                    _Track(
                        len(tracks),
                        inst.mask[col],
                        inst.mask[col],
                        hists[col],
                        centres[col],
                        None,
                        int(areas[col]),
                        step,
                    )
                )
            else:
                track = tracks[ids[col]]
                track.velocity = (centres[col] - track.centre) / (step - track.last_step)
            track = tracks[ids[col]]
            track.mask = track.moved = inst.mask[col]
            track.hist, track.centre, track.area = hists[col], centres[col], int(areas[col])
            track.last_step = step
        ids_per_step.append(ids)
    return [
        Instances(inst.mask, inst.xyxy, inst.score, inst.class_id, ids.astype(np.int32), inst.data)
        for inst, ids in zip(detections, ids_per_step)
    ]
