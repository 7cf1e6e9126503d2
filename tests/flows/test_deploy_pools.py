"""``celmask deploy --pool-type``: the pools' type and base job template. Kubernetes
pools from infra/k8s/ on a real Prefect server (it checks every template it is given,
and rejects a broken one), the deployments set to start flow runs in the image's
checkout; a pool of another type is a one-line error. Docker pools: Prefect's Docker
worker template, rendered as its worker would, the gpu pool's containers asking the
NVIDIA runtime for a GPU."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import docker.types
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.templating import apply_values
from prefect_docker.worker import DockerWorkerJobConfiguration

from celmask.flows.deploy import (
    GPU_DEVICE_REQUEST,
    IMAGE_REPO,
    KUBERNETES_TEMPLATE,
    PREFECT_FILE,
    DeploySettings,
    job_template,
)
from celmask.tasks.core.errors import CelmaskError
from tests.support.prefect_server import REPO, call_api, run, running_server, server_env

CELMASK = str(Path(sys.executable).with_name("celmask"))
IMAGE = "registry.example.com/studio/celmask:1.4"


def _deploy(env: dict[str, str], *args: str, repo: Path = REPO):
    return run([CELMASK, "deploy", "--inbox", "/data/inbox", "--out", "/data/out", "--repo", str(repo), *args], env)


@pytest.mark.slow
def test_kubernetes_pools_on_a_real_server(tmp_path):
    broken = tmp_path / "broken-repo"  # a checkout whose gpu template uses an undeclared variable
    for name in (PREFECT_FILE, KUBERNETES_TEMPLATE.format(pool="cpu"), KUBERNETES_TEMPLATE.format(pool="gpu")):
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, broken / name)
    gpu = broken / KUBERNETES_TEMPLATE.format(pool="gpu")
    gpu.write_text(gpu.read_text().replace("{{ gpus }}", "{{ gpu_count }}"))

    with running_server(tmp_path) as api_url:
        env = server_env(tmp_path, api_url)
        rejected = _deploy(env, "--pool-type", "kubernetes", repo=broken)
        assert rejected.returncode == 2 and rejected.stderr.strip().count("\n") == 0, rejected.stderr
        assert "work pool gpu" in rejected.stderr and "gpu_count" in rejected.stderr

        deployed = _deploy(env, "--pool-type", "kubernetes", "--image", IMAGE, "--gpu-slots", "4")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        # The rejected run had made the cpu pool (its template is good) before the gpu pool failed.
        assert "work pool cpu: exists (kubernetes, job template updated)" in deployed.stdout
        assert "work pool gpu: created (kubernetes)" in deployed.stdout
        for sweep in ("crash silent runs", "crash runs stuck pending"):  # the server accepted both automations
            assert f"automation 'celmask: {sweep}': created" in deployed.stdout
        found = call_api(env, "pools")
        for pool in ("cpu", "gpu"):
            expected = json.loads((REPO / KUBERNETES_TEMPLATE.format(pool=pool)).read_text())
            expected["variables"]["properties"]["image"]["default"] = IMAGE
            assert found["pools"][pool] == {"type": "kubernetes", "base_job_template": expected}, pool
        for name, pool in (("episode", "cpu"), ("segment-shot", "gpu"), ("correct-shot", "gpu"), ("nightly", "cpu")):
            deployment = found["deployments"][name]
            assert deployment["pool"] == pool
            assert deployment["pull_steps"] == [
                {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_REPO}}
            ]

        again = _deploy(env, "--pool-type", "kubernetes", "--image", IMAGE)
        assert again.returncode == 0 and "automation 'celmask: crash silent runs': updated" in again.stdout, (
            again.stdout
        )

        other = _deploy(env)  # process pools asked of a server that has kubernetes ones
        assert other.returncode == 2 and "is a kubernetes pool, not process" in other.stderr, other.stderr
        assert other.stderr.strip().count("\n") == 0


def _docker_container(pool: str) -> DockerWorkerJobConfiguration:
    """The configuration the Docker worker would start a flow run's container with."""
    template = job_template(pool, DeploySettings("/srv/inbox", "/srv/out", pool_type="docker", image=IMAGE))
    defaults = DockerWorkerJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    config = DockerWorkerJobConfiguration(**apply_values(template["job_configuration"], defaults))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="ep-ep01-shot-2", flow_id=uuid.uuid4()))
    return config


def test_docker_pools_run_the_image_with_out_mounted_and_the_gpu_requested():
    for pool in ("cpu", "gpu"):
        config = _docker_container(pool)
        assert config.image == IMAGE and config.volumes == ["/srv/inbox:/srv/inbox", "/srv/out:/srv/out"]
        requests = (config.container_create_kwargs or {}).get("device_requests")
        if pool == "gpu":
            assert requests == [GPU_DEVICE_REQUEST]
            assert docker.types.DeviceRequest(**requests[0])["Driver"] == "nvidia"  # what docker-py sends
        else:
            assert requests is None
    settings = DeploySettings("/srv/inbox", "/srv/out", pool_type="docker")
    assert settings.workdir == IMAGE_REPO and DeploySettings("/i", "/o").workdir == str(REPO)


def test_kubernetes_pools_want_the_inbox_and_out_on_their_claims():
    DeploySettings("/data/inbox", "/data/out/studio", pool_type="kubernetes").check()
    DeploySettings("s3://bucket/inbox", "/data/out", pool_type="kubernetes").check()
    with pytest.raises(CelmaskError, match="not on the pods' volume /data/out"):
        DeploySettings("/data/inbox", "/srv/out", pool_type="kubernetes").check()
