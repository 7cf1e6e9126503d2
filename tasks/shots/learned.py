"""The learned second opinion: TransNetV2's per-frame cut probability, computed from
the shot detector's own analysis frames while they stream past.

TransNetV2 scores frames in windows on a fixed grid: window ``k`` reads frames
``[k*STRIDE - MARGIN, k*STRIDE - MARGIN + WINDOW)`` (the first and last frame repeated
past the ends) and gives the probabilities of frames ``[k*STRIDE, (k+1)*STRIDE)``.
:class:`CutProbability` keeps that grid whether it scores every window or only the
windows asked for, so a frame's probability is the same in both cases: asking for
fewer windows only leaves the others unknown (NaN). Memory is a ring of tiny
48x27 frames (:data:`KEEP` of them plus a batch), never the episode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from celmask.models.transnetv2 import INPUT_SIZE, MARGIN, STRIDE, WINDOW

KEEP = 4 * WINDOW
"""Tiny frames kept behind the newest: a window may be asked for this late."""


class CutModel(Protocol):
    """What the detector needs of the learned model (:class:`celmask.models.transnetv2.TransNetV2`)."""

    id: str
    device: str

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """(B, WINDOW, 27, 48, 3) uint8 -> (B, STRIDE) probabilities."""
        ...


class CutProbability:
    """Feed analysis frames (RGB, any size) with :meth:`push`; ask for the frames whose
    probability is wanted with :meth:`request` (``every_frame``: all of them); get
    them from :meth:`finish`: (n,) float32, NaN where no window was scored.

    ``predict`` maps (B, WINDOW, 27, 48, 3) uint8 windows to (B, STRIDE) probabilities
    (:meth:`celmask.models.transnetv2.TransNetV2.predict`); ``batch`` windows go to it at once.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, every_frame: bool, batch: int = 1) -> None:
        self._predict = predict
        self._every = every_frame
        self._batch = max(1, batch)
        self._frames: deque[np.ndarray] = deque(maxlen=KEEP + self._batch * STRIDE)
        self._n = 0  # frames pushed
        self._wanted: set[int] = set()  # windows asked for, not yet scored
        self._ready: list[int] = []  # windows whose frames have all arrived, waiting for a batch
        self._scored: dict[int, np.ndarray] = {}
        self.windows_scored = 0

    @property
    def every_frame(self) -> bool:
        return self._every

    def push(self, rgb: np.ndarray) -> None:
        self._frames.append(cv2.resize(rgb, INPUT_SIZE, interpolation=cv2.INTER_AREA))
        self._n += 1
        if self._every and self._n % STRIDE == 1:
            self._wanted.add((self._n - 1) // STRIDE)
        self._collect(final=False)

    def request(self, first: int, last: int) -> None:
        """Ask for the probabilities of frames ``first..last`` (clipped to the video)."""
        first = max(0, first)
        for k in range(first // STRIDE, max(first, last) // STRIDE + 1):
            if k not in self._scored and k not in self._ready and k * STRIDE < max(self._n, last + 1):
                self._wanted.add(k)
        self._collect(final=False)

    def finish(self) -> np.ndarray:
        """Score what is still asked for; return every frame's probability (NaN: not scored)."""
        self._wanted = {k for k in self._wanted if k * STRIDE < self._n}
        self._collect(final=True)
        out = np.full(self._n, np.nan, np.float32)
        for k, p in self._scored.items():
            lo = k * STRIDE
            out[lo : lo + STRIDE] = p[: max(0, min(STRIDE, self._n - lo))]
        return out

    def _collect(self, *, final: bool) -> None:
        """Move windows whose frames have arrived to the batch; score full batches (all, when ``final``)."""
        for k in sorted(self._wanted):
            if final or k * STRIDE - MARGIN + WINDOW <= self._n:
                self._wanted.discard(k)
                self._ready.append(k)
        while self._ready and (final or len(self._ready) >= self._batch):
            chunk, self._ready = self._ready[: self._batch], self._ready[self._batch :]
            probs = self._predict(np.stack([self._window(k) for k in chunk]))
            for k, p in zip(chunk, probs):
                self._scored[k] = np.asarray(p, np.float32)
            self.windows_scored += len(chunk)

    def _window(self, k: int) -> np.ndarray:
        """Window ``k``'s frames; indices past either end repeat the first or last frame."""
        oldest = self._n - len(self._frames)
        lo = k * STRIDE - MARGIN
        if max(lo, 0) < oldest:
            raise RuntimeError(f"window {k} asked for after its frames left the ring (oldest kept: {oldest})")
        index = np.clip(np.arange(lo, lo + WINDOW), 0, self._n - 1) - oldest
        return np.stack([self._frames[i] for i in index])
