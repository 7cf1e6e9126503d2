"""Ctrl-C (SIGINT) and SIGTERM stop a command promptly, with one line, and leave
nothing half-written.

A signal raises :class:`KeyboardInterrupt` in the main thread (SIGTERM: Prefect's
``TerminationSignal`` while a flow runs), so the command unwinds, Prefect marks its
flow run crashed and the embedded server is stopped, and :func:`stopped` ends it. Shots
still working in pool threads are not waited for: a watchdog thread, woken through
``signal.set_wakeup_fd`` whichever Python handler the signal met, prints the one line
and ends the process :data:`GRACE_SECONDS` later whatever it is doing; a second signal
ends it at once. Either way :func:`celmask.tasks.core.atomic.abandon_writes` first
removes the files being written, so every output is whole (the previous file or a
complete new one), and an episode whose shot was being recomputed has already
withdrawn its ``_SUCCESS.json``. The embedded server ends with the process
(:mod:`celmask.flows.server_child`). Exit status: 130 for SIGINT, 143 for SIGTERM (128 +
the signal's number, as shells report it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from celmask.tasks.core.atomic import abandon_writes

GRACE_SECONDS = 3.0
"""How long the main thread may take to unwind before the process ends anyway."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_lock = threading.Lock()
_received: list[signal.Signals] = []
_installed = False


def _announce(number: int) -> bool:
    """Record the signal and print the command's one line, the first time; return
    whether it was the first."""
    with _lock:
        if _received:
            return False
        _received.append(signal.Signals(number))
    print(f"celmask: stopped by {_received[0].name}; files being written were discarded", file=sys.stderr, flush=True)
    return True


def _end_now() -> None:
    abandon_writes()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(128 + _received[0])


def _watch(fd: int) -> None:
    while True:
        for number in os.read(fd, 64):
            if number not in SIGNALS:
                continue
            if not _announce(number):
                _end_now()  # the second signal
            threading.Thread(target=lambda: (time.sleep(GRACE_SECONDS), _end_now()), daemon=True).start()


def _interrupt(number: int, frame) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Handle SIGINT and SIGTERM as above: for the process of a command (from its main
    thread), not for callers of the command's function in their own process."""
    global _installed
    if _installed:
        return
    _installed = True
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read,), daemon=True, name="celmask-signals").start()
    for number in SIGNALS:
        signal.signal(number, _interrupt)


def stopping() -> bool:
    """Whether a signal is stopping the command."""
    return bool(_received)


def stopped() -> int:
    """End the command after a signal (or a :class:`KeyboardInterrupt`): at once, without
    waiting for its threads (``os._exit``); in a caller's process, return the status."""
    if not _installed:
        print("celmask: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    deadline = time.monotonic() + 0.5
    while not _received and time.monotonic() < deadline:  # the watchdog is told a moment later
        time.sleep(0.01)
    _announce(signal.SIGINT)
    _end_now()
    return 128 + _received[0]  # not reached
