"""``celmask deploy``: stand celmask up on a running Prefect server.

Creates the ``cpu`` and ``gpu`` process work pools and the ``gpu`` global
concurrency limit (GPU slots across every worker), then registers the deployments of
``deployments/prefect.yaml`` with Prefect's own ``prefect deploy``, so the file stays
the one description of what runs where. Safe to run again: pools are kept, the limit
and the deployments are updated.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celmask.tasks.core.errors import CelmaskError

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = "deployments/prefect.yaml"
POOLS = ("cpu", "gpu")
GPU_LIMIT = "gpu"
DEFAULT_TIMEZONE = "Asia/Tokyo"
DEPLOY_TIMEOUT_S = 300


@dataclass(frozen=True)
class DeploySettings:
    inbox: str
    out: str
    timezone: str = DEFAULT_TIMEZONE
    gpu_slots: int = 1
    repo: Path = REPO

    def check(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CelmaskError("--timezone", f"unknown time zone {self.timezone!r}", "use an IANA name such as Asia/Tokyo or UTC") from None
        if self.gpu_slots < 1:
            raise CelmaskError("--gpu-slots", f"must be >= 1, got {self.gpu_slots}")
        if not (self.repo / PREFECT_FILE).is_file():
            raise CelmaskError(self.repo, f"has no {PREFECT_FILE}", "pass --repo with the celmask checkout the workers run from")
        if "://" not in self.out and not Path(self.out).is_absolute():
            raise CelmaskError("--out", f"{self.out!r} is relative, but workers run elsewhere", "pass an absolute path on shared storage")


def api_url() -> str:
    """The configured server's API URL; a one-line error when there is none."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise CelmaskError("PREFECT_API_URL", "not set: deploying needs a running Prefect server",
                           "start one (prefect server start) and export PREFECT_API_URL=http://HOST:4200/api")
    return url


async def _pools_and_limit(gpu_slots: int) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        WorkPoolCreate,
    )
    from prefect.exceptions import ObjectNotFound

    done = []
    async with get_client() as client:
        for name in POOLS:
            try:
                await client.read_work_pool(name)
                done.append(f"work pool {name}: exists")
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                done.append(f"work pool {name}: created (process)")
        try:
            await client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            await client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=gpu_slots))
            done.append(f"concurrency limit {GPU_LIMIT}: {gpu_slots} slot(s) (updated)")
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=gpu_slots))
            done.append(f"concurrency limit {GPU_LIMIT}: {gpu_slots} slot(s) (created)")
    return done


def deploy(settings: DeploySettings) -> list[str]:
    """Pools, limit and deployments on the configured server; what was done, one line each."""
    settings.check()
    url = api_url()
    done = [f"server {url}"] + asyncio.run(_pools_and_limit(settings.gpu_slots))
    env = {**os.environ, "CELMASK_REPO": str(settings.repo), "CELMASK_INBOX": settings.inbox,
           "CELMASK_OUT": settings.out, "CELMASK_TIMEZONE": settings.timezone, "PREFECT_API_URL": url}
    prefect = str(Path(sys.executable).with_name("prefect"))
    result = subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE],
                            cwd=settings.repo, env=env, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S, check=False)
    if result.returncode != 0:
        tail = " | ".join(line.strip() for line in (result.stdout + result.stderr).splitlines()[-6:] if line.strip())
        raise CelmaskError(PREFECT_FILE, f"prefect deploy failed ({tail})", "check the server and the file, then run celmask deploy again")
    done.append(f"deployments episode (cpu), segment-shot (gpu), nightly (cpu, 02:00 {settings.timezone}) from {settings.repo}")
    return done


def worker_commands(repo: Path = REPO) -> list[str]:
    """How to start the workers (on each host, with the server's PREFECT_API_URL exported)."""
    return [
        f"cd {repo} && prefect worker start --pool cpu --name cpu-$(hostname)",
        f"cd {repo} && CUDA_VISIBLE_DEVICES=0 prefect worker start --pool gpu --name gpu-$(hostname)-0   # one per GPU",
    ]
