"""infra/compose.yaml against the Compose Specification's JSON schema (as check-jsonschema
ships it, from compose-spec/compose-spec, Apache-2.0), and what the studio needs of it:
a healthcheck on every service, PostgreSQL on a volume, auth on for the server and
every client, a GPU worker with an NVIDIA reservation pinned to it, the inbox and OUT
volumes, and a ``celmask deploy`` that celmask's own parser accepts. No container
engine here: nothing is built or started."""

from __future__ import annotations

import importlib.resources
import json
import re
import shlex
import string
from pathlib import Path

import jsonschema
import pytest
import yaml

from celmask.flows.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "compose.yaml"
WORKERS = ("cpu-worker", "gpu-worker-0")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_valid_against_the_compose_specification(compose):
    schema = json.loads(
        (importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors


def test_every_service_has_a_healthcheck_and_waits_for_what_it_needs(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "server", *WORKERS}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        for needed, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy" and "healthcheck" in services[needed], (name, needed)
    assert services["server"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_server_on_postgres_with_auth_and_every_client_logs_in(compose):
    services = compose["services"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    server = services["server"]["environment"]
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    auth = server["PREFECT_SERVER_API_AUTH_STRING"]
    assert auth.startswith("${CELMASK_AUTH:?")  # required: compose refuses to start without it
    for name in WORKERS:
        env = services[name]["environment"]
        assert env["PREFECT_API_AUTH_STRING"] == auth and env["PREFECT_API_URL"] == "http://server:4200/api", name
        assert {"inbox:/data/inbox", "out:/data/out"} <= set(services[name]["volumes"]), name
    assert {"pgdata", "inbox", "out"} <= set(compose["volumes"])


def test_gpu_worker_reserves_its_nvidia_gpu_and_is_pinned_to_it(compose):
    worker = compose["services"]["gpu-worker-0"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
    assert worker["environment"]["CUDA_VISIBLE_DEVICES"] == "0"  # the one GPU the container sees
    assert worker["entrypoint"][:5] == ["prefect", "worker", "start", "--pool", "gpu"]


def test_cpu_worker_deploys_with_a_command_celmask_accepts(compose):
    service = compose["services"]["cpu-worker"]
    # The container's shell expands $VAR from its environment, set from the defaults of
    # compose's ${VAR:-default}.
    env = {k: re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", str(v)) for k, v in service["environment"].items()}
    script = string.Template(service["command"][0].replace("$$", "$")).substitute(env)
    deploy, worker = script.split(" && ")
    args = build_parser().parse_args(shlex.split(deploy)[1:])
    assert args.func.__name__ == "cmd_deploy" and args.pool_type == "process"
    assert (args.timezone, args.gpu_slots) == ("Asia/Tokyo", 1)
    assert (args.repo, args.inbox, args.out) == ("/opt/celmask", "/data/inbox", "/data/out")
    assert shlex.split(worker)[:6] == ["exec", "prefect", "worker", "start", "--pool", "cpu"]


def test_image_is_built_from_the_dockerfile(compose):
    build = compose["x-celmask"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == REPO / "infra" / "Dockerfile"
