"""infra/k8s without a cluster (none here: nothing is applied). The manifests validate
strictly against Kubernetes' own schemas (kubernetes-validate); the pools' base job
templates keep every variable and setting of prefect-kubernetes's default template,
and the Job the Kubernetes worker renders from each, as it would for a flow run,
is a valid Job: the gpu pool's asks for one NVIDIA GPU on GPU nodes, the cpu pool's
for none. tests/flows/test_deploy_pools.py puts them on a real Prefect server."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from celmask.flows.deploy import KUBERNETES_MOUNTS

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest Kubernetes still widely run and the newest kubernetes-validate knows."""
DEFAULT = KubernetesWorker.get_default_base_job_template()


def _documents() -> list[dict]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    ]


def _template(pool: str) -> dict:
    return json.loads((K8S / f"pool-{pool}.json").read_text())


def _strict(manifest: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(
            f"{manifest['kind']} {manifest.get('metadata', {}).get('name')} ({version}): "
            f"{'/'.join(map(str, error.path))}: {error.message}"
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_are_valid_kubernetes(version):
    for doc in _documents():
        _strict(doc, version)


def test_kustomization_applies_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_a_worker_per_pool_out_on_a_shared_claim():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _documents()}
    accounts = {name for kind, name in docs if kind == "ServiceAccount"}
    for pool in ("cpu", "gpu"):
        spec = docs[("Deployment", f"celmask-worker-{pool}")]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["command"][:7] == ["prefect", "worker", "start", "--pool", pool, "--type", "kubernetes"]
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
        assert secrets == {"PREFECT_API_URL": "api-url", "PREFECT_API_AUTH_STRING": "auth-string"}
        assert spec["serviceAccountName"] in accounts
        assert "nvidia.com/gpu" not in json.dumps(spec)  # the worker only submits Jobs
    for pool in ("cpu", "gpu"):
        variables = _template(pool)["variables"]["properties"]
        claim = docs[("PersistentVolumeClaim", variables["out_claim"]["default"])]
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert variables["service_account_name"]["default"] in accounts
        assert variables["namespace"]["default"] == claim["metadata"]["namespace"]


@pytest.mark.parametrize("pool", ["cpu", "gpu"])
def test_template_keeps_prefect_kubernetes_default(pool):
    template = _template(pool)
    assert template["job_configuration"].keys() == DEFAULT["job_configuration"].keys()
    for key, value in DEFAULT["job_configuration"].items():
        if key != "job_manifest":
            assert template["job_configuration"][key] == value, key
    ours, theirs = template["variables"], DEFAULT["variables"]
    assert ours["definitions"] == theirs["definitions"]
    for name, schema in theirs["properties"].items():
        mine = dict(ours["properties"][name])
        mine.pop("default", None), mine.pop("description", None)
        assert mine == {k: v for k, v in schema.items() if k not in ("default", "description")}, name
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(ours["properties"])
    assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(DEFAULT["job_configuration"]))) <= placeholders


def _rendered_job(pool: str) -> dict:
    """The Job the Kubernetes worker would create for a flow run of ``pool``, with the
    template's defaults: Prefect's own rendering (``from_template_and_values`` less its
    block and variable look-ups, which need a server; the templates have none) and
    prefect-kubernetes's checks and completion of the manifest."""
    template = _template(pool)
    assert "{{ prefect." not in json.dumps(template)
    config = KubernetesWorkerJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    job = KubernetesWorkerJobConfiguration(**apply_values(template["job_configuration"], config))
    job.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="ep-ep01-shot-3", flow_id=uuid.uuid4()))
    return job.job_manifest


@pytest.mark.parametrize("pool", ["cpu", "gpu"])
def test_rendered_job_is_valid_and_asks_for_its_gpu(pool):
    job = _rendered_job(pool)
    pod = job["spec"]["template"]["spec"]
    # prefect-kubernetes requires these two in the pod spec (its default template puts
    # them there too); Kubernetes ignores them. Everything else must be valid.
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    for version in VERSIONS:
        _strict(job, version)
    (container,) = pod["containers"]
    assert container["image"] == "celmask:latest" and job["metadata"]["namespace"] == "celmask"
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]} == {"celmask-out", "celmask-inbox"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == set(KUBERNETES_MOUNTS.values())  # what deploy checks
    if pool == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert "nvidia.com/gpu" not in json.dumps(job) and "nodeSelector" not in pod and "tolerations" not in pod
