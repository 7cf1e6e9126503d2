"""The propagator interface: carry masks from a keyframe through the following frames.

Backends: :mod:`celmask.models.propagators.optical_flow` (weight-free dense optical flow, OpenCV DIS, with
forward-backward occlusion checks and fusion with the frame's own detections) and
:mod:`celmask.models.propagators.sam2` (SAM 2 video propagation through ultralytics, when its weights are
configured).

The caller orders the frames: keyframe first, then forward to the shot's end, or the
frames before the keyframe in reverse order back to its start. It passes only unique
drawings (held frames copy their drawing's result), so every step is a real change.

    for masks, confidence in propagator.propagate(frames, key_masks, guides):
        ...   # frames[1], frames[2], ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Guide:
    """A frame's own detections of the propagated objects, matched by track."""

    mask: np.ndarray
    """(k, H, W) bool: object i's detected mask in this frame (all False when absent)."""
    present: np.ndarray
    """(k,) bool: whether object i was detected in this frame."""


class Propagator(Protocol):
    model_id: str
    """What propagated the masks, for the manifest (name and weight checksum)."""

    def propagate(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``frames``: RGB uint8 (H, W, 3) images in propagation order, ``frames[0]`` the
        keyframe; ``masks``: (k, H, W) bool, the k objects in ``frames[0]``; ``guides``:
        None or one per frame (``guides[0]`` unused), the frame's detections of each
        object, which a backend may fuse with where they agree.

        Yields, for ``frames[1:]`` in order, ``(masks, confidence)``: (k, H, W) bool and
        (k,) float32 in [0, 1], how far to trust each object's mask in that frame (it
        decays as errors can accumulate and recovers where a detection agrees). An
        object that left the frame yields an empty mask. Lazy: frames are consumed
        one at a time, so stopping early costs nothing more."""
        ...
