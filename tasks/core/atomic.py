"""Files that appear whole or not at all.

Outputs are written to a hidden temporary name beside their final path, flushed to
disk and renamed over it, so a reader sees the old file or the new one, never half of
one, and a crash leaves at most a ``.<name>.<pid>-<hex>.partial`` file that no reader
picks up (dataset readers skip names starting with "."; it does not end in the
output's extension).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; when the block ends without
    an exception it replaces ``path``, otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "xb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)  # the rename itself survives a power cut


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
    removed. Readers see the old directory or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp.with_suffix(".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
