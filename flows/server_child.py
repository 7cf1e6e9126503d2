"""The embedded Prefect server's process: uvicorn, ended when its parent ends.

``python -m celmask.flows.server_child FD UVICORN-ARGS...``: FD is the read end of a
pipe whose write end only the parent command holds. The kernel closes it when the
parent ends, however it ends (SIGKILL included), and a thread here that waits on it
then stops the server (SIGTERM to itself, uvicorn's clean shutdown; at once after
:data:`SHUTDOWN_SECONDS`). So a killed ``celmask run`` never leaves its server running.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

SHUTDOWN_SECONDS = 5.0


def _watch(fd: int) -> None:
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(SHUTDOWN_SECONDS)
    os._exit(0)


def main(argv: list[str]) -> None:
    threading.Thread(target=_watch, args=(int(argv[0]),), daemon=True, name="parent-watch").start()
    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
