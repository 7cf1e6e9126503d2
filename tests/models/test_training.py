"""Training the detector offline: a tiny run on generated data, and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from celmask.models.ultralytics_env import FONT_NAME, ultralytics_offline
from celmask.tasks.trainset.composites import build_dataset

CELMASK = str(Path(sys.executable).with_name("celmask"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to resolve a name or open a connection; record it."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(address))
    return attempts


@pytest.mark.slow
def test_tiny_training_run_gives_weights_that_predict_masks(tmp_path, no_network):
    config = ultralytics_offline()
    assert (config / FONT_NAME).is_file()  # what ultralytics' dataset check would download otherwise
    data = build_dataset(tmp_path / "ds", train_images=12, val_images=4, test_images=4, seed=3)

    from celmask.models.training import evaluate_detector, train_detector

    best = train_detector(data, tmp_path / "run", epochs=1, imgsz=64, batch=4, seed=0)
    assert best.name == "best.pt" and best.is_file()

    from ultralytics import YOLO

    image = min((tmp_path / "ds" / "images" / "test").glob("*.jpg"))
    result = YOLO(str(best)).predict(str(image), imgsz=64, conf=1e-6, device="cpu", verbose=False)[0]
    assert result.masks is not None and result.masks.data.shape[0] > 0  # one epoch: low scores, but masks
    assert result.orig_shape == (360, 640)

    metrics = evaluate_detector(best, data, split="test")
    assert metrics["split"] == "test" and metrics["imgsz"] == 64 and metrics["images"] == 4
    for key in ("mask_map50", "mask_map50_95", "box_map50", "box_map50_95"):
        assert 0.0 <= metrics[key] <= 1.0
    assert no_network == []


def celmask(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CELMASK, *map(str, args)], check=False, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--images", "0"], "--images: must be >= 1"),
        (["--seed", "-1"], "--seed: must be 0.."),
        (["--cutouts", "/nonexistent/cutouts"], "/nonexistent/cutouts: directory not found"),
        (["--backgrounds", "/nonexistent/sets"], "/nonexistent/sets: directory not found"),
        (["--resume"], "no checkpoint to resume from"),
    ],
)
def test_cli_train_rejects_bad_options_in_one_line(tmp_path, args, message):
    done = celmask("train", tmp_path / "out", *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"celmask: error: {done.stderr.strip().split('error: ', 1)[1]}"]
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_train_end_to_end(tmp_path):
    """The whole flow (embedded Prefect): dataset, 1 epoch at 64 px, evaluation, publishing."""
    out = tmp_path / "detector"
    done = celmask(
        "train",
        out,
        "--images",
        "8",
        "--val-images",
        "3",
        "--test-images",
        "3",
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--cutouts",
        "none",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best.pt" in done.stdout and "mask mAP50" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert Path(metrics["weights"]) == out / "best.pt" and (out / "best.pt").is_file()
    assert metrics["test"]["images"] == 3 and metrics["val"]["images"] == 3
    assert metrics["parameters"]["cutouts"] is None
    seeds = {k: set(v["episode_seeds"]) for k, v in metrics["splits"].items()}
    assert not seeds["test"] & (seeds["train"] | seeds["val"])
    assert (out / "dataset" / "data.yaml").is_file() and (out / "ultralytics" / "train" / "results.csv").is_file()


@pytest.mark.slow
def test_an_interrupted_training_run_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL after the first epoch's checkpoint, then --resume: the run ends with all its
    epochs, the first one not trained again, and publishes its weights."""
    import signal
    import time

    out = tmp_path / "detector"
    args = [
        "train",
        out,
        "--images",
        "24",
        "--val-images",
        "3",
        "--test-images",
        "2",
        "--epochs",
        "3",
        "--imgsz",
        "96",
        "--batch",
        "4",
        "--cutouts",
        "none",
        "--backgrounds",
        "none",
    ]  # epochs of a few seconds
    run = subprocess.Popen(
        [CELMASK, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    results = out / "ultralytics" / "train" / "results.csv"
    last = out / "ultralytics" / "train" / "weights" / "last.pt"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:  # epoch 1's metrics, then its checkpoint
        if results.is_file() and len(results.read_text().splitlines()) >= 2 and last.is_file():
            os.killpg(run.pid, signal.SIGSTOP)  # frozen where it is: epochs take a second on a quiet machine
            if _resumable_epoch(last) is not None:
                break
            os.killpg(run.pid, signal.SIGCONT)  # caught writing last.pt: let it finish
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    assert not (out / "best.pt").exists()
    first = results.read_text().splitlines()[1]

    done = celmask(*args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = results.read_text().splitlines()
    epochs = [int(line.split(",")[0]) for line in lines[1:]]
    assert lines[1] == first and epochs[0] == 1 and sorted(set(epochs)) == [1, 2, 3], lines  # epoch 1 not trained again
    # (an epoch whose metrics were logged but whose checkpoint the kill cut short is logged twice)
    assert (out / "best.pt").is_file() and json.loads((out / "metrics.json").read_text())["parameters"]["resumed"]

    again = celmask(*args, "--resume")  # a finished run: nothing left to train, published again
    assert again.returncode == 0, again.stderr[-3000:]
    assert results.read_text().splitlines() == lines


def _resumable_epoch(last: Path) -> int | None:
    """The epoch a whole, unfinished ``last.pt`` was saved after; None while it is being written."""
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)  # our own run's file
    except Exception:
        return None
    assert ckpt["optimizer"] is not None and ckpt["epoch"] < 2, "the run finished before it could be interrupted"
    return ckpt["epoch"]
