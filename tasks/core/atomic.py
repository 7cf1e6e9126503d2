"""Files that appear whole or not at all.

Outputs are written to a hidden temporary name beside their final path, flushed to
disk and renamed over it, so a reader sees the old file or the new one, never half of
one, and a crash leaves at most a ``.<name>.<pid>-<hex>.partial`` file that no reader
picks up (dataset readers skip names starting with "."; it does not end in the
output's extension). A command stopped by a signal calls :func:`abandon_writes`
before it exits, which removes the temporary names still open and lets no write finish.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


_writes = threading.Lock()
_writing: set[Path] = set()
"""Temporary names being written by this process."""
_abandoned = False


class WritesAbandoned(RuntimeError):
    """The process is stopping (:func:`abandon_writes`): no write may finish."""


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def _begin(tmp: Path, make: Callable[[Path], T]) -> T:
    """``make(tmp)``, registered as being written, unless the process is stopping."""
    with _writes:
        if _abandoned:
            raise WritesAbandoned(f"{tmp.parent}: the process is stopping")
        made = make(tmp)
        _writing.add(tmp)
        return made


def _end(tmp: Path) -> None:
    with _writes:
        _writing.discard(tmp)


def _replace(tmp: Path, path: Path) -> None:
    old = tmp.with_suffix(".old")
    with _writes:
        if _abandoned:
            raise WritesAbandoned(f"{path}: the process is stopping")
        if tmp.is_dir() and path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _writing.discard(tmp)
    shutil.rmtree(old, ignore_errors=True)


def abandon_writes() -> None:
    """Remove every temporary name this process is writing and let no write finish from
    now on: the last step of a process about to end at once (``os._exit``), so that it
    leaves nothing half-written whatever its threads were doing."""
    global _abandoned
    with _writes:
        _abandoned = True
        for tmp in _writing:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        _writing.clear()


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; when the block ends without
    an exception it replaces ``path``, otherwise it is removed."""
    path = Path(path)
    tmp = _temporary(path)
    fh = _begin(tmp, lambda t: open(t, "xb"))
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        _end(tmp)
        _name_the_output(error, path)
        raise
    _sync_dir(path.parent)  # the rename itself survives a power cut


def _name_the_output(error: BaseException, path: Path) -> None:
    """A write that failed without naming its file (a full disk fails ``write()``, not
    ``open()``) now names the output, so the one-line error says where."""
    if isinstance(error, OSError) and error.filename is None:
        raise OSError(error.errno, error.strerror, str(path)) from error


def _sync_dir(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_durably(*paths: Path) -> None:
    """Remove those of ``paths`` that exist, in order, each removal on disk before the
    next: a withdrawn claim (``_SUCCESS.json``) must not come back after a power cut
    while what replaced its subject stays."""
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        _sync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, so readers never see half a file."""
    with atomic_file(path) as fh:
        fh.write(data)


@contextmanager
def staged_dir(path: Path) -> Iterator[Path]:
    """A hidden directory beside ``path`` to write into; when the block ends without an
    exception it takes ``path``'s place (an earlier one is removed), otherwise it is
    removed, with the folders above it this made (a failed export leaves no empty
    ``_exports/``). Readers see the old directory or the new one, never half of one."""
    made = [parent for parent in path.parents if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    _begin(tmp, Path.mkdir)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        _end(tmp)
        for parent in made:  # deepest first; one another process has filled stays
            try:
                parent.rmdir()
            except OSError:
                break
        _name_the_output(error, path)
        raise
