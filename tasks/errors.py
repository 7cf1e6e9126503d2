"""Errors that reach an operator as one line: what went wrong, where, and how to fix it.

The CLI prints ``str(error)`` of any :class:`CelmaskError` on one line and exits 2,
without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class CelmaskError(Exception):
    """A problem with the user's input or environment, not a bug in celmask."""

    def __init__(self, where: str | Path, problem: str, fix: str = "") -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}"
        return f"{text}; {self.fix}" if self.fix else text


class VideoError(CelmaskError):
    """The video cannot be read: missing, not a video, empty, truncated or corrupt."""
