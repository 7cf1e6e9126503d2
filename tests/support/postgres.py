"""A throwaway PostgreSQL cluster for tests: ``initdb`` in a temporary directory, its
own port on 127.0.0.1, password authentication over TCP, stopped by PID.

The binaries are Debian's ``postgresql`` package (``./dev.sh test`` installs it when
root). PostgreSQL refuses to run as root, so under root the cluster runs as the
package's ``postgres`` user. Durability is off (``fsync``): the cluster lives for one
test module.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.prefect_server import free_port, stop_process_group

USER = "prefect"
DATABASE = "prefect"


def bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<major>/bin``; None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # through symlinks to the directory with all the tools
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parents[1].name.isdigit()]
    return max(versions, key=lambda p: int(p.parents[1].name)).parent if versions else None


MISSING = "PostgreSQL is not installed (Debian: apt-get install postgresql; ./dev.sh test installs it when root)"


def _run_as() -> dict[str, int]:
    """Popen's user/group to run PostgreSQL as: the ``postgres`` user under root, else oneself."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, but there is no postgres user to run PostgreSQL as "
            "(the Debian package creates it: apt-get install postgresql)"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@contextmanager
def running_postgres(startup_timeout: float = 60.0) -> Iterator[str]:
    """A fresh cluster with database ``prefect`` until the block exits; yield its
    SQLAlchemy URL for Prefect (``postgresql+asyncpg://prefect:PASSWORD@127.0.0.1:PORT/prefect``)."""
    bin_dir = bindir()
    if bin_dir is None:
        raise RuntimeError(MISSING)
    owner = _run_as()
    root = Path(tempfile.mkdtemp(prefix="celmask-pg-"))  # not under pytest's tmp: the postgres user must reach it
    data, password = root / "data", secrets.token_hex(12)
    (root / "pwfile").write_text(password + "\n")
    if owner:
        os.chown(root, owner["user"], owner["group"])
        os.chown(root / "pwfile", owner["user"], owner["group"])
    log_path = root / "postgres.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            initdb = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    f"--pwfile={root / 'pwfile'}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--no-instructions",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
                **owner,
            )
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb failed ({initdb.returncode}): {log_path.read_text()[-2000:]}")
            port = free_port()
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **owner,
            )
        env = {**os.environ, "PGPASSWORD": password}
        address = ["-h", "127.0.0.1", "-p", str(port), "-U", USER]
        deadline = time.monotonic() + startup_timeout
        while (
            subprocess.run(
                [str(bin_dir / "pg_isready"), *address, "-d", "postgres"], env=env, capture_output=True, check=False
            ).returncode
            != 0
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        subprocess.run(
            [str(bin_dir / "createdb"), *address, DATABASE], env=env, capture_output=True, check=True, timeout=60
        )
        yield f"postgresql+asyncpg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if proc is not None:
            stop_process_group(proc, sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)
