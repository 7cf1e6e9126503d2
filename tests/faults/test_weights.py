"""Critical 2 of issue 13: a weights file is data, never code. A crafted ``.pt`` whose
unpickling creates a marker file reaches each loader a setting can point at
(``detector.weights``, ``propagator.weights``); the marker must never appear and the
error must be one line. SAM 2 files, published without digests, must be pinned."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from celmask.models.weights import resolve_weights
from celmask.tasks.core.errors import CelmaskError
from tests.support.finished import celmask, one_line_error

pytestmark = pytest.mark.faults


class _Payload:
    """Unpickles as ``open(marker, "w")``: the file appears if the pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def crafted(path: Path, marker: Path) -> Path:
    """A checkpoint shaped like an ultralytics one whose model is the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Payload(marker), "train_args": {}}, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def test_the_crafted_file_does_run_code_when_unpickled(tmp_path, marker):
    """The control: the payload works, so its absence below means it never ran."""
    torch.load(crafted(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_crafted_detector_weights_never_run(tmp_path, marker):
    from celmask.models.detectors.yolo import YoloConfig, YoloDetector

    with pytest.raises(CelmaskError, match="holds objects other than a model's layers and weights") as error:
        YoloDetector(YoloConfig(weights=str(crafted(tmp_path / "evil.pt", marker))))
    assert "\n" not in str(error.value) and not marker.exists()


def test_the_builtin_detector_loads_in_safe_mode():
    import ultralytics.nn.tasks

    from celmask.models.detectors.yolo import YoloConfig, YoloDetector
    from celmask.tasks.segment.model_sets import BUILTIN_DETECTOR

    detector = YoloDetector(YoloConfig(weights=str(BUILTIN_DETECTOR), device="cpu"))
    assert ultralytics.nn.tasks.SAFE_LOAD is True and detector.model.task == "segment"


def test_crafted_sam2_weights_never_run_even_when_pinned(tmp_path, marker):
    from celmask.models.propagators.sam2 import Sam2Config, Sam2Propagator

    evil = crafted(tmp_path / "sam2_t.pt", marker)
    with pytest.raises(CelmaskError, match="holds objects other than a model's layers and weights") as error:
        Sam2Propagator(f"{evil}@sha256:{sha256(evil)}", Sam2Config(device="cpu"))
    assert "\n" not in str(error.value) and not marker.exists()


def test_sam2_weights_must_be_pinned_and_match_their_pin(tmp_path, monkeypatch):
    from celmask.models.propagators.sam2 import Sam2Config, Sam2Propagator

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "sam2_t.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CelmaskError, match="must be pinned") as error:
        Sam2Propagator(path, Sam2Config(device="cpu"))
    assert f"propagator.weights={path}@sha256:" in str(error.value) and sha256(path) in str(error.value)
    with pytest.raises(CelmaskError, match="is not the pinned"):
        Sam2Propagator(f"{path}@sha256:{'0' * 64}", Sam2Config(device="cpu"))
    with pytest.raises(CelmaskError, match="64 lowercase hex digits"):
        Sam2Propagator(f"{path}@sha256:abc", Sam2Config(device="cpu"))
    monkeypatch.setenv("CELMASK_SAM2_CHECKPOINT", f"{path}@sha256:{'1' * 64}")  # the variable may carry the pin
    with pytest.raises(CelmaskError, match="is not the pinned"):
        resolve_weights(None, None, env_var="CELMASK_SAM2_CHECKPOINT", pinned=True)


def test_a_pin_is_checked_against_the_file_not_a_cached_digest(tmp_path, monkeypatch):
    """A same-size replacement with the old mtime fools the digest cache, not a pin."""
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(4)}, path)
    pin = sha256(path)
    assert resolve_weights(f"{path}@sha256:{pin}", None, pinned=True) == path
    stat = path.stat()
    torch.save({"w": torch.ones(4)}, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    with pytest.raises(CelmaskError, match="is not the pinned"):
        resolve_weights(f"{path}@sha256:{pin}", None, pinned=True)


def test_safe_loading_holds_when_ultralytics_was_imported_first(tmp_path, marker):
    evil = crafted(tmp_path / "evil.pt", marker)
    script = (
        "import ultralytics\n"  # before celmask sets the flag
        "from celmask.models.detectors.yolo import YoloConfig, YoloDetector\n"
        "from celmask.tasks.core.errors import CelmaskError\n"
        f"try:\n    YoloDetector(YoloConfig(weights={str(evil)!r}))\nexcept CelmaskError as e:\n    print(e)\n"
    )
    env = {"ULTRALYTICS_SAFE_LOAD": "0", "YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "holds objects other than" in done.stdout, done.stdout + done.stderr[-3000:]
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_weights_through_the_command_line_are_one_line_exit_2(finished, env, tmp_path, marker):
    """As the audit did it: both settings, a user's ULTRALYTICS_SAFE_LOAD=0 no help."""
    evil = crafted(tmp_path / "evil.pt", marker)
    sam2 = crafted(tmp_path / "sam2" / "sam2_t.pt", marker)
    env = {**env, "ULTRALYTICS_SAFE_LOAD": "0"}
    for settings in (
        [f"detector.weights={evil}"],
        ["propagator=sam2", f"propagator.weights={sam2}@sha256:{sha256(sam2)}"],
    ):
        done = celmask(
            env,
            "segment",
            finished.video,
            "--frames",
            "0:8",
            "--set",
            "work_size=320",
            *(arg for setting in settings for arg in ("--set", setting)),
        )
        assert done.returncode == 2, done.stderr[-3000:]
        assert "holds objects other than" in one_line_error(done)
        assert not marker.exists()
