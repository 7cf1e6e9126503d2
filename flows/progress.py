"""Progress of an episode run: shots done of total, frames per second, time left.

The episode flow reports to :data:`listener` (the command line's progress bar) and
to a Prefect progress artifact (the UI). Frames per second count the frames of
shots segmented here, cached and failed ones excluded, so the rate and the time left describe the
work still to do rather than a cache's speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class EpisodeProgress:
    episode_id: str
    shots: int
    frames: int
    done: int = 0
    failed: int = 0
    cached: int = 0
    frames_done: int = 0
    frames_computed: int = 0
    started: float = field(default_factory=time.monotonic)

    def shot_finished(self, frames: int, *, ok: bool, cached: bool) -> None:
        self.done += 1
        self.failed += not ok
        self.cached += cached
        self.frames_done += frames
        self.frames_computed += frames if ok and not cached else 0

    @property
    def fraction(self) -> float:
        return self.done / self.shots if self.shots else 1.0

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames_computed / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None until a shot has been computed."""
        rate = self.fps
        return (self.frames - self.frames_done) / rate if rate > 0 else None

    def describe(self) -> str:
        eta = "" if self.eta is None else f", about {self.eta:.0f} s left"
        extra = "".join(f", {n} {what}" for n, what in ((self.cached, "cached"), (self.failed, "failed")) if n)
        return (
            f"{self.done}/{self.shots} shots ({self.frames_done}/{self.frames} frames){extra}; "
            f"{self.fps:.1f} frames/s{eta}"
        )


listener: ContextVar[Callable[[EpisodeProgress], None] | None] = ContextVar("celmask_progress_listener", default=None)
"""Told after every finished shot of an episode flow run in this context."""
