"""Held frames: runs of identical drawings (anime "on 2s/3s" and still holds).

Anime repeats each drawing for 2-3 frames and holds stills for seconds, so most
frames of an episode are copies of the previous one up to compression noise.
Every model stage runs once per unique drawing and copies its result to the
holds; this module finds them cheaply on the low-res analysis stream.

A frame is "held" when no block of its difference from the previous frame
changes by more than ``threshold`` grey levels on average. Blocks, not the whole
frame, so a small change (a mouth flap in a wide shot) still counts as a new
drawing while codec noise spread over the frame does not.

>>> ids = drawing_ids(np.array([False, True, True, False, True]))
>>> ids.tolist()
[0, 0, 0, 1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

HOLD_THRESHOLD = 3.0
"""Largest mean absolute difference (grey levels, 0-255) of any block between two
frames that still counts as the same drawing. H.264 at normal quality leaves
held blocks within ~1 level; the smallest real drawing changes exceed ~6."""

HOLD_BLOCK = 8
"""Block edge in analysis pixels (8 px of a 160-px-wide frame = 32 px at 640 wide)."""


@dataclass(frozen=True)
class HoldConfig:
    threshold: float = HOLD_THRESHOLD
    block: int = HOLD_BLOCK

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"hold threshold must be >= 0, got {self.threshold}")
        if self.block < 1:
            raise ValueError(f"hold block must be >= 1 pixel, got {self.block}")


def block_change(previous: np.ndarray, current: np.ndarray, block: int = HOLD_BLOCK) -> float:
    """Largest per-block mean absolute difference between two grey frames (H, W) uint8."""
    if previous.shape != current.shape:
        raise ValueError(f"frames differ in shape: {previous.shape} vs {current.shape}")
    diff = cv2.absdiff(previous, current)
    h, w = diff.shape
    bh, bw = max(1, h // block), max(1, w // block)
    means = cv2.resize(diff, (bw, bh), interpolation=cv2.INTER_AREA)
    return float(means.max())


def drawing_ids(held: np.ndarray) -> np.ndarray:
    """Map per-frame "same as previous" flags (n,) bool to drawing ids (n,) int64.

    Frames with the same id show the same drawing; ids count up from 0 in frame order.
    """
    held = np.asarray(held, dtype=bool)
    if held.size == 0:
        return np.zeros(0, dtype=np.int64)
    new = ~held
    new[0] = True
    return np.cumsum(new) - 1


def held_runs(held: np.ndarray, offset: int = 0) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` runs of at least two frames showing one drawing."""
    ids = drawing_ids(held)
    if ids.size == 0:
        return []
    edges = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [ids.size]))
    return [(int(s) + offset, int(e) + offset) for s, e in zip(starts, ends) if e - s >= 2]
