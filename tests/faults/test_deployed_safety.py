"""Major 12 of issue 13: a safe deployed set-up by default. The compose studio publishes
the Prefect API on loopback unless told a private address; the image makes workers
refuse a run whose config names a model file outside ``CELMASK_MODEL_DIRS``, before
any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from celmask.flows.episode import check_settings
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.segment.model_files import MODEL_DIRS_ENV

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[2]


def test_the_compose_server_listens_on_loopback_by_default():
    ports = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())["services"]["server"]["ports"]
    assert ports == ["${CELMASK_BIND:-127.0.0.1}:${CELMASK_PORT:-4200}:4200"]
    assert "ENV CELMASK_MODEL_DIRS=/models" in (REPO / "infra" / "Dockerfile").read_text()
    assert "--host 0.0.0.0" not in (REPO / "deployments" / "README.md").read_text()


def test_a_worker_takes_model_files_only_from_its_directories(tmp_path, monkeypatch):
    allowed, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    for d in (allowed, elsewhere):
        d.mkdir()
        (d / "yolo-seg.pt").write_bytes(b"weights")
    (allowed / "escape.pt").symlink_to(elsewhere / "yolo-seg.pt")
    monkeypatch.setenv(MODEL_DIRS_ENV, str(allowed))
    for key in ("detector.weights", "propagator.weights", "refiner.checkpoint", "detector.path"):
        for outside in (elsewhere / "yolo-seg.pt", allowed / "escape.pt", f"{allowed}/../elsewhere/yolo-seg.pt"):
            with pytest.raises(CelmaskError, match=f"config {key}: .* is outside the model directories"):
                check_settings({key: str(outside)})
        assert check_settings({key: str(allowed / "yolo-seg.pt")}) == {key: str(allowed / "yolo-seg.pt")}
    assert check_settings({"detector.weights": "builtin", "refiner.checkpoint": "sam_vit_b_01ec64.pth"})

    monkeypatch.delenv(MODEL_DIRS_ENV)  # a workstation: any path
    assert check_settings({"detector.weights": str(elsewhere / "yolo-seg.pt")})
