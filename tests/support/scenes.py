"""Small drawn scenes: for the propagator tests a flat-coloured, outlined figure over a
painted background and a frame sequence that counts what was read; for the shot
detector's tests flat-colour "sets" to cut between."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def background(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (150, 190, 220)
    image[height // 2 :] = (120, 160, 90)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(c) for c in rng.integers(60, 230, 3))
        cv2.rectangle(image, (x, y), (x + width // 10, y + height // 8), colour, -1)
        cv2.rectangle(image, (x, y), (x + width // 10, y + height // 8), (30, 30, 30), max(1, width // 320))
    return image


def drawn_scene(height: int, width: int, centres: list[tuple[float, float]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames with an outlined figure (body, head, a stripe) at each centre, and its true masks."""
    s = width / 640
    frames, masks = [], []
    for cx, cy in centres:
        image, mask = background(height, width), np.zeros((height, width), np.uint8)
        centre, head = (round(cx * s), round(cy * s)), (round(cx * s), round((cy - 55) * s))
        for target, colour, line in ((mask, 1, 1), (image, (230, 80, 90), (20, 20, 20))):
            cv2.ellipse(target, centre, (round(28 * s), round(45 * s)), 0, 0, 360, colour, -1)
            cv2.circle(target, head, round(20 * s), colour if target is mask else (250, 210, 180), -1)
            if target is image:
                cv2.ellipse(image, centre, (round(28 * s), round(45 * s)), 0, 0, 360, line, max(1, round(2 * s)))
                cv2.circle(image, head, round(20 * s), line, max(1, round(2 * s)))
                cv2.line(
                    image,
                    (centre[0] - round(20 * s), centre[1]),
                    (centre[0] + round(20 * s), centre[1]),
                    (250, 240, 90),
                    max(1, round(4 * s)),
                )
        frames.append(image)
        masks.append(mask > 0)
    return frames, np.stack(masks)


class CountingFrames(Sequence):
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.read = frames, set()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index):
        self.read.add(index)
        return self.frames[index]


SHOT_SIZE = (90, 160)
"""(height, width) of the shot detector's analysis frames in its tests."""


def flat_set(seed: int, height: int = SHOT_SIZE[0], width: int = SHOT_SIZE[1]) -> np.ndarray:
    """A flat-colour 'set': a few random rectangles with dark outlines, (height, width, 3) uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), rng.integers(40, 220, 3), np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, width - 30), rng.integers(0, height - 20)
        w, h = rng.integers(15, 60), rng.integers(10, 40)
        img[y : y + h, x : x + w] = 0
        img[y + 2 : y + h - 2, x + 2 : x + w - 2] = rng.integers(0, 255, 3)
    return img


def held(img: np.ndarray, n: int) -> list[np.ndarray]:
    """``img`` shown for ``n`` frames."""
    return [img] * n
