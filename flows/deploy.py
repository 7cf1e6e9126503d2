"""``celmask deploy``: stand celmask up on a running Prefect server.

Creates the ``cpu`` and ``gpu`` work pools and the ``gpu`` global concurrency limit
(GPU slots across every worker), then registers the deployments of
``deployments/prefect.yaml`` with Prefect's own ``prefect deploy``, so the file stays
the one description of what runs where. Safe to run again: pools are kept (their job
templates updated), the limit and the deployments are updated.

The pools' type (``--pool-type``) says where a flow run runs: ``process`` (a
subprocess of the worker, from the shared checkout), ``docker`` (a container of the
celmask image, Prefect's Docker worker template; the gpu pool's containers get an
NVIDIA GPU) or ``kubernetes`` (a Job of the celmask image, the templates of
``infra/k8s/``: the gpu pool requests ``nvidia.com/gpu``). Containers run the flows
from the image's copy of the checkout, :data:`IMAGE_REPO`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celmask.flows.watch import HEARTBEAT_EVENT, PENDING_MESSAGE, PENDING_SECONDS, SILENT_MESSAGE, SILENT_SECONDS
from celmask.tasks.core.errors import CelmaskError

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = "deployments/prefect.yaml"
POOLS = ("cpu", "gpu")
POOL_TYPES = ("process", "docker", "kubernetes")
KUBERNETES_TEMPLATE = "infra/k8s/pool-{pool}.json"
"""Base job templates of the kubernetes pools, in the checkout."""
KUBERNETES_MOUNTS = {"--inbox": "/data/inbox", "--out": "/data/out"}
"""Where those templates mount the inbox's and OUT's claims in every pod."""
IMAGE_REPO = "/opt/celmask"
"""Where infra/Dockerfile puts the checkout: docker and kubernetes flow runs start there."""
DEFAULT_IMAGE = "celmask:latest"
GPU_DEVICE_REQUEST = {"driver": "nvidia", "count": 1, "capabilities": [["gpu"]]}
"""What a docker gpu pool's container asks the NVIDIA runtime for (docker-py's DeviceRequest)."""
GPU_LIMIT = "gpu"
DEFAULT_TIMEZONE = "Asia/Tokyo"
DEPLOY_TIMEOUT_S = 300
TERMINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


@dataclass(frozen=True)
class DeploySettings:
    inbox: str
    out: str
    timezone: str = DEFAULT_TIMEZONE
    gpu_slots: int = 1
    repo: Path = REPO
    """The checkout to deploy from; for process pools also the path every worker runs flows from."""
    pool_type: str = "process"
    image: str = DEFAULT_IMAGE
    """The celmask image docker and kubernetes pools run (infra/Dockerfile)."""

    @property
    def workdir(self) -> str:
        """Where flow runs start (the deployments' pull step): the shared checkout, or the image's."""
        return str(self.repo) if self.pool_type == "process" else IMAGE_REPO

    def check(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CelmaskError(
                "--timezone", f"unknown time zone {self.timezone!r}", "use an IANA name such as Asia/Tokyo or UTC"
            ) from None
        if self.gpu_slots < 1:
            raise CelmaskError("--gpu-slots", f"must be >= 1, got {self.gpu_slots}")
        if self.pool_type not in POOL_TYPES:
            raise CelmaskError(
                "--pool-type", f"unknown pool type {self.pool_type!r}", f"use one of {', '.join(POOL_TYPES)}"
            )
        if not (self.repo / PREFECT_FILE).is_file():
            raise CelmaskError(
                self.repo, f"has no {PREFECT_FILE}", "pass --repo with the celmask checkout the workers run from"
            )
        if "://" not in self.out and not Path(self.out).is_absolute():
            raise CelmaskError(
                "--out",
                f"{self.out!r} is relative, but workers run elsewhere",
                "pass an absolute path on shared storage",
            )
        if self.pool_type == "kubernetes":
            for flag, path in (("--inbox", self.inbox), ("--out", self.out)):
                mount = KUBERNETES_MOUNTS[flag]
                if "://" not in path and not Path(path).is_relative_to(mount):
                    raise CelmaskError(
                        flag,
                        f"{path!r} is not on the pods' volume {mount}",
                        f"pass {mount} (or a folder in it): the pools' templates mount the claim there",
                    )


def _with_default(template: dict[str, Any], variable: str, value: Any) -> None:
    template["variables"]["properties"][variable]["default"] = value


def job_template(pool: str, settings: DeploySettings) -> dict[str, Any] | None:
    """The base job template of ``pool`` for ``settings.pool_type``; None for process
    pools (Prefect's own)."""
    if settings.pool_type == "process":
        return None
    if settings.pool_type == "kubernetes":
        path = settings.repo / KUBERNETES_TEMPLATE.format(pool=pool)
        try:
            template = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CelmaskError(
                path, f"cannot be read as a job template ({error})", "restore it from the celmask checkout"
            ) from None
    else:
        try:
            from prefect_docker.worker import DockerWorker
        except ImportError:
            raise CelmaskError("--pool-type docker", "needs prefect-docker", "pip install 'celmask[workers]'") from None
        template = copy.deepcopy(DockerWorker.get_default_base_job_template())
        local = [path for path in (settings.inbox, settings.out) if "://" not in path]
        _with_default(template, "volumes", [f"{path}:{path}" for path in local])  # the same paths inside
        if pool == "gpu":
            _with_default(template, "container_create_kwargs", {"device_requests": [GPU_DEVICE_REQUEST]})
    _with_default(template, "image", settings.image)
    return template


def api_url() -> str:
    """The configured server's API URL; a one-line error when there is none."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise CelmaskError(
            "PREFECT_API_URL",
            "not set: deploying needs a running Prefect server",
            "start one (prefect server start) and export PREFECT_API_URL=http://HOST:4200/api",
        )
    return url


def _rejection(response: httpx.Response) -> str:
    """Why the server refused a request: the messages of its validation errors, else its text."""
    try:
        details = response.json().get("exception_detail") or []
        text = " ".join(d["msg"] for d in details if isinstance(d, dict) and "msg" in d) or response.text
    except (ValueError, AttributeError):
        text = response.text
    return " ".join(text.split())[:500]


async def _pools_and_limit(settings: DeploySettings) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        WorkPoolCreate,
        WorkPoolUpdate,
    )
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    done, kind, slots = [], settings.pool_type, settings.gpu_slots
    async with get_client() as client:
        for name in POOLS:
            template = job_template(name, settings)
            try:
                pool = await client.read_work_pool(name)
            except ObjectNotFound:
                pool = None
            if pool is not None and pool.type != kind:
                raise CelmaskError(
                    f"work pool {name}",
                    f"is a {pool.type} pool, not {kind}",
                    f"deploy with --pool-type {pool.type}, or delete it first (prefect work-pool delete {name})",
                )
            try:
                if pool is None:
                    await client.create_work_pool(
                        WorkPoolCreate(name=name, type=kind, base_job_template=template or {})
                    )
                elif template is not None:
                    await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
            except PrefectHTTPStatusError as error:
                raise CelmaskError(
                    f"work pool {name}",
                    f"the server rejected its job template ({_rejection(error.response)})",
                    f"fix the template ({KUBERNETES_TEMPLATE.format(pool=name)} for kubernetes pools)",
                ) from None
            state = "created" if pool is None else "exists"
            done.append(
                f"work pool {name}: {state} ({kind}" + (", job template updated)" if pool and template else ")")
            )
        try:
            await client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            await client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots))
            done.append(f"concurrency limit {GPU_LIMIT}: {slots} slot(s) (updated)")
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            done.append(f"concurrency limit {GPU_LIMIT}: {slots} slot(s) (created)")
        for automation in crash_sweeps():
            found = await client.read_automations_by_name(automation.name)
            if found:
                await client.update_automation(found[0].id, automation)
            else:
                await client.create_automation(automation)
            done.append(f"automation {automation.name!r}: {'updated' if found else 'created'}")
    return done


def crash_sweeps() -> list:
    """Automations that end flow runs whose process is gone, so none stays Running or
    Pending for good (what a lost worker or a restarted server leaves behind). The
    episode and nightly flows end their own children so too
    (:class:`celmask.flows.watch.RunWatch`): the event a sweep needs can be lost with a
    killed server."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    def sweep(name: str, after: str, expect: set[str], seconds: int, why: str) -> AutomationCore:
        return AutomationCore(
            name=name,
            description=why,
            trigger=EventTrigger(
                after={after},
                expect=expect | TERMINAL_EVENTS,
                match={"prefect.resource.id": "prefect.flow-run.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=seconds),
            ),
            actions=[ChangeFlowRunState(state=StateType.CRASHED, message=why)],
        )

    return [
        sweep(
            "celmask: crash silent runs",
            HEARTBEAT_EVENT,
            {HEARTBEAT_EVENT},
            SILENT_SECONDS,
            SILENT_MESSAGE,
        ),
        sweep(
            "celmask: crash runs stuck pending",
            "prefect.flow-run.Pending",
            {"prefect.flow-run.Running"},
            PENDING_SECONDS,
            PENDING_MESSAGE,
        ),
    ]


def deploy(settings: DeploySettings) -> list[str]:
    """Pools, limit and deployments on the configured server; what was done, one line each."""
    settings.check()
    url = api_url()
    done = [f"server {url}"] + asyncio.run(_pools_and_limit(settings))
    env = {
        **os.environ,
        "CELMASK_REPO": settings.workdir,
        "CELMASK_INBOX": settings.inbox,
        "CELMASK_OUT": settings.out,
        "CELMASK_TIMEZONE": settings.timezone,
        "PREFECT_API_URL": url,
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    result = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE],
        cwd=settings.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        tail = " | ".join(line.strip() for line in (result.stdout + result.stderr).splitlines()[-6:] if line.strip())
        raise CelmaskError(
            PREFECT_FILE,
            f"prefect deploy failed ({tail})",
            "check the server and the file, then run celmask deploy again",
        )
    done.append(
        f"deployments episode (cpu), segment-shot (gpu), correct-shot (gpu), nightly (cpu, 02:00 {settings.timezone}), "
        f"flows run from {settings.workdir}"
    )
    return done


def worker_commands(settings: DeploySettings) -> list[str]:
    """How to start the workers (on each host, with the server's PREFECT_API_URL exported)."""
    if settings.pool_type == "kubernetes":
        return ["kubectl apply -k infra/k8s   # the worker Deployments (deployments/README.md, Kubernetes)"]
    if settings.pool_type == "docker":
        return [
            "prefect worker start --pool cpu --type docker --name cpu-$(hostname)",
            "prefect worker start --pool gpu --type docker --name gpu-$(hostname)   # each GPU host",
        ]
    repo = settings.repo
    return [
        f"cd {repo} && prefect worker start --pool cpu --name cpu-$(hostname)",
        f"cd {repo} && CUDA_VISIBLE_DEVICES=0 prefect worker start --pool gpu --limit 1 --name gpu-$(hostname)-0   # one per GPU",
    ]
