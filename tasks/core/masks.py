"""Mask arithmetic every segmentation stage shares: overlap, and the rule that
decides whether a refined mask may replace its input."""

from __future__ import annotations

import cv2
import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU between (n, H, W) and (m, H, W) bool masks; 0 where both are empty."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float32)
    x, y, w, h = cv2.boundingRect(np.logical_or(a.any(0), b.any(0)).view(np.uint8))
    a, b = a[:, y : y + h, x : x + w], b[:, y : y + h, x : x + w]  # counts outside are 0: exact, and fewer
    fa = a.reshape(n, -1).astype(np.float32)
    fb = b.reshape(m, -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def mask_centre(mask: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass of an (H, W) bool mask; (0, 0) when it is empty. Moments of
    its box only: sums of whole pixel coordinates, exact, so the same as the mean of them."""
    mask = np.asarray(mask, bool).view(np.uint8)
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return np.zeros(2)
    m = cv2.moments(mask[y : y + h, x : x + w], binaryImage=True)
    return np.array([(m["m10"] + x * m["m00"]) / m["m00"], (m["m01"] + y * m["m00"]) / m["m00"]])


def shift_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``mask`` (H, W bool) moved by (dx, dy) pixels, nearest sampling, empty where it
    comes in from outside; shifts under half a pixel leave it as it is."""
    if abs(dx) < 0.5 and abs(dy) < 0.5:
        return mask
    h, w = mask.shape
    moved = cv2.warpAffine(mask.astype(np.uint8), np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_NEAREST)
    return moved > 0


def accept_refinement(
    before: np.ndarray,
    after: np.ndarray,
    *,
    min_iou: float = 0.75,
    min_part_kept: float = 0.5,
    min_part: float = 0.01,
    edge: int = 3,
) -> bool:
    """Whether ``after`` (H, W bool) may replace ``before``: it overlaps it by at least
    ``min_iou`` (so it neither swallows the background nor loses much); every
    connected part of ``before`` holding at least ``min_part`` of its area keeps at
    least ``min_part_kept`` of its pixels (a separate limb, small in area, is not
    dropped); and what it adds or removes is an edge correction, not a chunk: no more
    than ``min_part`` of the area lies deeper than ``edge`` pixels inside the added or
    the removed pixels (a piece of the set is a chunk; a band along the outline is
    not). An empty input is never replaced."""
    area = int(before.sum())
    if area == 0 or not after.any():
        return False
    inter = int(np.logical_and(before, after).sum())
    if inter / (area + int(after.sum()) - inter) < min_iou:
        return False
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1, 2 * edge + 1))
    for change in (before & ~after, after & ~before):
        if cv2.erode(change.astype(np.uint8), kernel).sum() > min_part * area:
            return False
    count, labels, stats, _ = cv2.connectedComponentsWithStats(before.astype(np.uint8), connectivity=8)
    for part in range(1, count):
        if stats[part, cv2.CC_STAT_AREA] >= min_part * area:
            kept = after[labels == part].mean()
            if kept < min_part_kept:
                return False
    return True
