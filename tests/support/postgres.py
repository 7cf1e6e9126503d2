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


class Cluster:
    """A cluster in a temporary directory: :meth:`start` it (again after :meth:`stop`, on
    the same port and data), :meth:`remove` it."""

    def __init__(self) -> None:
        bin_dir = bindir()
        if bin_dir is None:
            raise RuntimeError(MISSING)
        self.bin_dir, self.owner = bin_dir, _run_as()
        self.root = Path(
            tempfile.mkdtemp(prefix="celmask-pg-")
        )  # not under pytest's tmp: the postgres user must reach it
        self.data, self.password, self.port = self.root / "data", secrets.token_hex(12), free_port()
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None
        (self.root / "pwfile").write_text(self.password + "\n")
        if self.owner:
            os.chown(self.root, self.owner["user"], self.owner["group"])
            os.chown(self.root / "pwfile", self.owner["user"], self.owner["group"])

    @property
    def url(self) -> str:
        """The SQLAlchemy URL for Prefect."""
        return f"postgresql+asyncpg://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _address(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", USER]

    def create(self) -> None:
        """initdb, start, and the ``prefect`` database."""
        with open(self.log_path, "ab") as log:
            initdb = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    f"--pwfile={self.root / 'pwfile'}",
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
                **self.owner,
            )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {self.log_path.read_text()[-2000:]}")
        self.start()
        subprocess.run(
            [str(self.bin_dir / "createdb"), *self._address(), DATABASE],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            check=True,
            timeout=60,
        )

    def start(self, startup_timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.owner,
            )
        env = {**os.environ, "PGPASSWORD": self.password}
        ready = [str(self.bin_dir / "pg_isready"), *self._address(), "-d", "postgres"]
        deadline = time.monotonic() + startup_timeout
        while subprocess.run(ready, env=env, capture_output=True, check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, sig=signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """A fresh, running cluster with database ``prefect`` until the block exits."""
    cluster = Cluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def running_postgres() -> Iterator[str]:
    """A fresh cluster with database ``prefect`` until the block exits; yield its
    SQLAlchemy URL for Prefect (``postgresql+asyncpg://prefect:PASSWORD@127.0.0.1:PORT/prefect``)."""
    with postgres_cluster() as cluster:
        yield cluster.url
