"""celmask installed from its wheel: one top-level name in site-packages, and it runs.

The wheel goes into a fresh virtual environment without its dependencies; a ``.pth``
line lends it this environment's packages (torch, ultralytics, ...) without the
editable install's finder, so what runs is the wheel's code and nothing from the
checkout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a fresh venv holding only the wheel."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root, REPO],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = root.glob("celmask-*.whl")
    env = root / "venv"
    venv.create(env, with_pip=False)
    py = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    entry = [
        line
        for line in (site / next(site.glob("celmask-*.dist-info")).name / "entry_points.txt").read_text().splitlines()
        if line.startswith("celmask")
    ]
    assert entry == ["celmask = celmask.flows.cli:main"]
    (env / "bin" / "celmask").write_text(f"#!{py}\nimport sys\nfrom celmask.flows.cli import main\nsys.exit(main())\n")
    (env / "bin" / "celmask").chmod(0o755)
    (site / "_celmask_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


def test_the_wheel_adds_only_celmask_to_site_packages(installed):
    site = Path(
        subprocess.run(
            [installed / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    top = sorted(p.name for p in site.iterdir() if p.name != "_celmask_test_deps.pth")
    assert top == ["celmask", next(n for n in top if n.endswith(".dist-info"))], top
    where = subprocess.run(
        [
            installed / "python",
            "-c",
            "import celmask.tasks, celmask.models; "
            "import importlib.util as u; print(celmask.tasks.__file__); "
            "print(u.find_spec('tasks'), u.find_spec('models'), u.find_spec('flows'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout.splitlines()
    assert where[0].startswith(str(site)) and where[1] == "None None None"
    assert (site / "celmask" / "models" / "trained" / "detector.pt").is_file()  # the built-in detector ships inside


@pytest.mark.slow
def test_the_installed_command_runs_and_segments_a_shot(installed, clip, tmp_path):
    done = subprocess.run([installed / "celmask", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "segment" in done.stdout
    done = subprocess.run(
        [installed / "celmask", "segment", clip("cfr.mp4"), "--frames", "0:8", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["frames"] == 8 and "sha256:" in result["models"]["detector"]
