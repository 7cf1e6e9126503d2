"""Keyframe scoring: which drawing of a track is the best mask to propagate from.

Nakajima et al. fed a video segmenter the still-image mask it was most confident
about and showed the failure: the most confident frame is not always the best
mask. So a candidate's score combines more evidence, each part in [0, 1] and kept
for the operator to see why a frame was chosen:

- ``confidence``: the detector's own score;
- ``quality``: share of the mask's outline that lies on the drawing's line art (a
  cel character is bounded by lines; an eroded, dilated or chopped mask is not);
- ``size``: area relative to the track's largest (a partial mask is small);
- ``completeness``: the mask is not cut by the frame border;
- ``sharpness``: line contrast inside the mask relative to the track's sharpest
  drawing (smears and motion blur lose it);
- ``agreement``: mean overlap with the track's masks on the neighbouring drawings,
  each moved onto the candidate's centre first (a shape its neighbours confirm is not
  a one-drawing accident, however fast the character moves);
- ``position``: closeness to the middle of the track, which halves the distance
  propagation must carry the mask.

``keyframe=confidence`` is the baseline: the same choice on ``confidence`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import mask_centre, mask_iou, shift_mask
from celmask.tasks.core.types import KEYFRAME_COMPONENTS

COMPONENTS = KEYFRAME_COMPONENTS


@dataclass(frozen=True)
class KeyframeConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "confidence": 0.15,
            "quality": 0.2,
            "size": 0.15,
            "completeness": 0.15,
            "sharpness": 0.05,
            "agreement": 0.25,
            "position": 0.05,
        }
    )
    """Weight of each component in the total (normalised to sum to 1)."""
    neighbours: int = 2
    """Drawings either side whose masks a candidate's ``agreement`` is measured against."""
    line_tolerance: int = 1
    """Pixels between a mask's outline and a line that still count as on it."""

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(COMPONENTS)
        if unknown or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(
                f"keyframe weights must be non-negative, not all zero, over {COMPONENTS}; got {self.weights}"
            )


@dataclass(frozen=True)
class Candidate:
    """One drawing of a track as a keyframe candidate, with the parts of its score."""

    track_id: int
    step: int
    """Index of the drawing among the shot's unique drawings."""
    frame_index: int
    total: float
    components: dict[str, float]


def drawing_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lines, laplacian) of a drawing, computed once and shared by all its tracks:
    the line art (Canny edges on grey, (H, W) bool) that ``quality`` is measured on and
    the Laplacian ((H, W) float32) whose variance is ``sharpness``."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(grey, 50, 150) > 0, cv2.Laplacian(grey, cv2.CV_32F)


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT)) > 0


def _quality(mask: np.ndarray, lines: np.ndarray, tolerance: int) -> float:
    outline = _outline(mask)
    n = int(outline.sum())
    if n == 0:
        return 0.0
    near = cv2.dilate(lines.astype(np.uint8), np.ones((2 * tolerance + 1,) * 2, np.uint8)) > 0
    return float((outline & near).sum() / n)


def _border_share(mask: np.ndarray) -> float:
    """Share of the mask's outline that runs along the frame border."""
    outline = int(_outline(mask).sum())
    if outline == 0:
        return 0.0
    border = int(mask[0].sum() + mask[-1].sum() + mask[1:-1, 0].sum() + mask[1:-1, -1].sum())
    return min(1.0, border / outline)


def _sharpness(laplacian: np.ndarray, mask: np.ndarray) -> float:
    values = laplacian[mask]
    return float(values.var()) if values.size else 0.0


def score_candidates(
    images: Sequence[np.ndarray],
    frame_indices: Sequence[int],
    tracked: Sequence[Instances],
    config: KeyframeConfig = KeyframeConfig(),
) -> dict[int, list[Candidate]]:
    """Every observation of every track (``tracked[i]``: the track-labelled instances of
    drawing ``i``, shown first at ``frame_indices[i]``) scored as a keyframe candidate;
    track id -> candidates in drawing order."""
    maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def maps_of(step: int) -> tuple[np.ndarray, np.ndarray]:
        if step not in maps:
            maps[step] = drawing_maps(images[step])
        return maps[step]

    observations: dict[int, list[tuple[int, int]]] = {}
    for step, inst in enumerate(tracked):
        for row, tid in enumerate(inst.track_id):
            observations.setdefault(int(tid), []).append((step, row))

    total_weight = sum(config.weights.values())
    out: dict[int, list[Candidate]] = {}
    for tid, obs in sorted(observations.items()):
        masks = [tracked[s].mask[r] for s, r in obs]
        centres = [mask_centre(m) for m in masks]
        areas = np.array([m.sum() for m in masks], np.float64)
        sharp = [_sharpness(maps_of(s)[1], m) for (s, _), m in zip(obs, masks)]
        sharp_max = max(sharp) or 1.0
        first, last = obs[0][0], obs[-1][0]
        half = (last - first) / 2
        candidates = []
        for j, ((s, r), m) in enumerate(zip(obs, masks)):
            near = [
                shift_mask(masks[k], *(centres[j] - centres[k]))
                for k in range(max(0, j - config.neighbours), min(len(obs), j + config.neighbours + 1))
                if k != j
            ]
            agreement = float(mask_iou(m[None], np.stack(near)).mean()) if near else 1.0
            parts = {
                "confidence": float(tracked[s].score[r]),
                "quality": _quality(m, maps_of(s)[0], config.line_tolerance),
                "size": float(areas[j] / areas.max()) if areas.max() > 0 else 0.0,
                "completeness": 1.0 - _border_share(m),
                "sharpness": sharp[j] / sharp_max,
                "agreement": agreement,
                "position": 1.0 - (abs(s - (first + half)) / half if half > 0 else 0.0),
            }
            total = sum(config.weights.get(k, 0.0) * v for k, v in parts.items()) / total_weight
            candidates.append(
                Candidate(tid, s, int(frame_indices[s]), round(total, 6), {k: round(v, 6) for k, v in parts.items()})
            )
        out[tid] = candidates
    return out


def choose(candidates: Sequence[Candidate], method: str = "score") -> Candidate:
    """The keyframe among ``candidates``: best total (``score``) or best detector
    confidence (``confidence``, the baseline); ties go to the earlier drawing."""
    if method not in ("score", "confidence"):
        raise ValueError(f"keyframe must be 'score' or 'confidence', got {method!r}")
    key = (lambda c: c.total) if method == "score" else (lambda c: c.components["confidence"])
    return max(candidates, key=lambda c: (key(c), -c.step))
