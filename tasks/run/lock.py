"""One command at a time on an episode directory.

``OUT/<episode_id>/_run/lock`` is held with ``fcntl.flock`` by whichever ``celmask
run``, ``rerun``, ``finalize`` (or episode flow) works on the episode; a second one
refuses at once with one line naming the holder's pid, instead of racing it to write
``_SUCCESS.json``. The kernel drops the lock when its process ends, however it ends,
so a killed run never leaves a stale one. The lock is taken again freely within the
process that holds it (``celmask run`` locks, then its episode flow does).

Locks bind on the host's own file systems; on a network share (NFS, SMB) they may not
reach other hosts, so deployed episodes rely on Prefect running one episode flow per
episode at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from celmask.tasks.core.errors import CelmaskError, output_problem
from celmask.tasks.manifest.layout import run_dir

LOCK_NAME = "lock"
LEFTOVER = re.compile(r"\..+\.(\d+)-[0-9a-f]{8}\.(partial|old)")
"""A temporary name of :mod:`celmask.tasks.core.atomic`, with its writer's pid."""
_held: dict[Path, int] = {}
"""Lock file -> how many blocks of this process hold it."""


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise CelmaskError(
            error.filename or path,
            f"cannot write the episode there: {output_problem(error) or error.strerror}",
            "choose another --out",
        ) from None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(episode_dir: Path) -> list[Path]:
    """Remove the temporary files and folders that killed writers left in the episode
    (their pid no longer runs here); return them."""
    gone = []
    for path in sorted(episode_dir.rglob(".*")):
        match = LEFTOVER.fullmatch(path.name)
        if match and int(match[1]) != os.getpid() and not alive(int(match[1])):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            gone.append(path)
    return gone


@contextlib.contextmanager
def episode_lock(episode_dir: str | Path, command: str = "", *, tidy: bool = False) -> Iterator[None]:
    """Hold the episode's lock for the block, or raise a one-line error naming the
    process that holds it. Creating the lock file is also the first write into OUT, so
    an unwritable OUT fails here, before any work. ``tidy``: then remove what killed
    writers left (:func:`remove_leftovers`), for commands that write on this host only."""
    path = run_dir(Path(os.path.abspath(episode_dir))) / LOCK_NAME
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise CelmaskError(
                path.parent.parent,
                f"in use by {holder}",
                "wait for it to end (or stop it), then run this again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"celmask {command or ' '.join(sys.argv[1:2])} (pid {os.getpid()} on {socket.gethostname()})".encode(),
            0,
        )
        _held[path] = 1
        if tidy:
            remove_leftovers(path.parent.parent)
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing drops the lock
