"""Plain data shared by every stage. Imports only the standard library and numpy.

Frame ranges are half-open ``[start, end)`` in presentation-order frame indices of
the episode file; times are seconds from the video stream's start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

import numpy as np


class Source(IntEnum):
    """Where a mask came from: the provenance code of every manifest row (stored
    there as its lower-case name, :attr:`label`)."""

    DETECTED = 0
    PROPAGATED = 1
    REFINED = 2
    CORRECTED = 3
    """Drawn by a person (``celmask correct``): a permanent keyframe of its track."""

    @property
    def label(self) -> str:
        return self.name.lower()


SOURCE_LABELS = tuple(s.label for s in Source)
"""The manifest's ``source`` values, in code order."""

KEYFRAME_COMPONENTS = ("confidence", "quality", "size", "completeness", "sharpness", "agreement", "position")
"""What a keyframe's score is made of (:mod:`celmask.tasks.segment.keyframes`), as the
manifest records it."""

STILL_HEIGHT = 108
"""Pixels: contact-sheet tiles (report, UI); big enough to see a mask slip off a
character, small enough for 300 shots."""


def still_size(size: tuple[int, int], height: int = STILL_HEIGHT) -> tuple[int, int]:
    """(width, height) of a still ``height`` pixels tall of frames of (height, width) ``size``."""
    return max(2, round(height * size[1] / size[0])), height


TRANSITIONS = ("start", "cut", "fade", "dissolve")
"""How a shot begins: the first shot "start"s; later ones follow a hard cut, a fade
through black, or a cross-dissolve."""


@dataclass(frozen=True)
class Shot:
    """One shot: frames ``[start, end)`` and the transition that starts it.

    For a gradual transition, ``transition_start``/``transition_end`` give the
    half-open span of the fade or dissolve; the boundary ``start`` lies inside it.
    For a cut (or the first shot) the span is empty at ``start``.
    """

    index: int
    start: int
    end: int
    start_time: float
    end_time: float
    transition: str = "cut"
    transition_start: int = -1
    transition_end: int = -1

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"shot {self.index}: need 0 <= start < end, got [{self.start}, {self.end})")
        if self.transition not in TRANSITIONS:
            raise ValueError(f"shot {self.index}: transition must be one of {TRANSITIONS}, got {self.transition!r}")

    @property
    def frame_count(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int
    """Presentation-order frame index from the start of the stream (0-based)."""
    time: float
    """Presentation time in seconds from the stream's start time (from the stream's own timestamps)."""
    image: np.ndarray
    """``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 gray; C-contiguous and writable."""


@dataclass(frozen=True)
class DecodeIssue:
    """A decoder or demuxer complaint, attached to the next frame delivered after it."""

    index: int
    """Frame index the complaint is attached to (the frame delivered next; with frame-threaded
    decoding and B-frames the damaged frame can be a few frames later). When decoding stopped,
    the index of the first frame that did not come."""
    time: float
    """Presentation time of that frame in seconds (estimated when it did not come)."""
    message: str
    """FFmpeg's message(s) for this frame, one line."""
