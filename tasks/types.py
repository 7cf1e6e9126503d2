"""Plain data shared by every stage. Imports only the standard library and numpy.

Frame ranges are half-open ``[start, end)`` in presentation-order frame indices of
the episode file; times are seconds from the video stream's start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
