"""Errors that reach an operator as one line: what went wrong, where, and how to fix it.

The CLI prints ``str(error)`` of any :class:`CelmaskError` on one line and exits 2,
without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path


class CelmaskError(Exception):
    """A problem with the user's input or environment, not a bug in celmask."""

    exit_code = 2
    """What the command line exits with."""

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


class ShotsFailed(CelmaskError):
    """Some shots of an episode failed; the others are written. Not the input's fault
    as a whole, so the command exits 1 rather than 2."""

    exit_code = 1


class TransientError(CelmaskError):
    """A failure that may pass when tried again: GPU memory taken by another job, a
    storage hiccup, a lost worker. Orchestration retries these (with backoff) and
    fails everything else at once."""


def is_out_of_memory(error: BaseException) -> bool:
    """A device out of memory: torch's ``OutOfMemoryError`` (named, so torch need not be
    imported here) or a backend's "out of memory" message (CUDA, MPS)."""
    return any(c.__name__ == "OutOfMemoryError" for c in type(error).__mro__) or "out of memory" in str(error).lower()


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: a :class:`TransientError`, a device out of memory,
    a dropped connection or timeout. Other :class:`CelmaskError` s (bad input) never are."""
    if isinstance(error, TransientError):
        return True
    if isinstance(error, CelmaskError):
        return False
    return isinstance(error, (ConnectionError, TimeoutError, MemoryError)) or is_out_of_memory(error)


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, for a one-line error about it: libraries
    put advice of their own (ultralytics, torch) on the lines below."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


_OUTPUT_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "on a read-only file system",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.ENOTDIR: "a file stands where a directory should be",
    errno.EEXIST: "a file stands where a directory should be",
}


def output_problem(error: OSError) -> str | None:
    """What an OS error writing output means to an operator (a full disk, a read-only
    file system, a file where OUT should be), or None for other errors (bugs)."""
    return _OUTPUT_PROBLEMS.get(error.errno)
