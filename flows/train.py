"""The ``train`` flow: build a detector dataset, train YOLO-seg on it, judge it on
held-out episodes, publish the weights.

    build-dataset  real-art composites + generated ones + episode frames
                   (tasks/trainset/composites.py): train, val, test, split by character
                   (or, for a studio's own cast, by pose)
    train-detector ultralytics, offline (models/training.py); --resume goes on from
                   the run's last checkpoint
    evaluate       on val (what picked best.pt) and on test: composites of held-out
                   characters on held-out sets, and frames of generated episodes whose
                   seeds no training or validation image came from; each split also
                   per source (``subsets`` in metrics.json)
    publish        OUT/best.pt, OUT/metrics.json

Everything lands in ``OUT``: ``dataset/`` (images, labels, manifests, data.yaml),
``ultralytics/train/`` (ultralytics' run: args.yaml, results.csv, weights),
``best.pt`` and ``metrics.json``. Run it with ``celmask train OUT`` or call
:func:`train` (embedded Prefect when no server is configured).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from importlib.metadata import version
from pathlib import Path

from prefect import flow, task

from celmask.models.training import DEFAULT_MODEL, evaluate_detector, train_detector
from celmask.models.weights import file_sha256
from celmask.tasks.trainset.composites import build_dataset

build_dataset_task = task(build_dataset, name="build-dataset")
train_detector_task = task(train_detector, name="train-detector")
evaluate_task = task(evaluate_detector, name="evaluate", task_run_name="evaluate-{split}")


@flow(name="train")
def train_flow(
    out: str,
    *,
    images: int = 600,
    val_images: int = 150,
    test_images: int | None = None,
    epochs: int = 20,
    imgsz: int = 320,
    seed: int = 0,
    cutouts: str | None = None,
    backgrounds: str | None = None,
    batch: int = 16,
    device: str = "cpu",
    model: str = DEFAULT_MODEL,
    resume: bool = False,
    split_by: str = "character",
) -> dict:
    """Build the dataset (``images`` train, ``val_images`` val, ``test_images`` held-out
    episode frames, default = ``val_images``), train ``epochs`` epochs at ``imgsz``,
    evaluate, and write ``OUT/best.pt`` and ``OUT/metrics.json``; return the metrics.

    ``cutouts`` / ``backgrounds``: directories of real art; None = the shared ones when
    present, ``"none"`` = generated only. ``split_by``: ``"character"`` (never a
    character in two splits) or ``"pose"`` (a studio's own cast: every character trained
    on, val and test on poses training never showed). ``resume``: go on with the interrupted run in
    ``OUT`` (the dataset is rebuilt the same, by seed, when it is gone).
    """
    started = time.time()
    root = Path(out).resolve()
    test_images = val_images if test_images is None else test_images
    existing = root / "dataset" / "data.yaml"
    if resume and existing.is_file():
        data_yaml = existing
    else:
        data_yaml = build_dataset_task(
            root / "dataset",
            train_images=images,
            val_images=val_images,
            test_images=test_images,
            seed=seed,
            cutouts=cutouts,
            backgrounds=backgrounds,
            split_by=split_by,
        )
    built = time.time()
    best = train_detector_task(
        data_yaml,
        root / "ultralytics",
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        device=device,
        model=model,
        resume=resume,
    )
    trained = time.time()
    val = evaluate_task(best, data_yaml, split="val", imgsz=imgsz, device=device)
    test = evaluate_task(best, data_yaml, split="test", imgsz=imgsz, device=device) if test_images else None
    subsets: dict[str, dict] = {}
    for sub_yaml in sorted(Path(data_yaml).parent.glob("data-*.yaml")):
        split, _, group = sub_yaml.stem[len("data-") :].partition("-")
        if split in ("val", "test"):
            subsets.setdefault(split, {})[group] = evaluate_task(
                best, sub_yaml, split="val", imgsz=imgsz, device=device
            )

    target = root / "best.pt"
    tmp = root / ".best.pt.partial"
    shutil.copyfile(best, tmp)
    os.replace(tmp, target)
    dataset = json.loads((Path(data_yaml).parent / "dataset.json").read_text())
    metrics = {
        "weights": str(target),
        "sha256": file_sha256(target),
        "model": model,
        "parameters": {
            "images": images,
            "val_images": val_images,
            "test_images": test_images,
            "epochs": epochs,
            "imgsz": imgsz,
            "seed": seed,
            "split_by": split_by,
            "batch": batch,
            "device": device,
            "cutouts": dataset["cutouts"]["dir"],
            "backgrounds": dataset.get("backgrounds", {}).get("dir"),
            "resumed": resume,
        },
        "splits": {
            k: {f: v.get(f) for f in ("seed", "kinds", "instances", "episode_seeds", "characters", "background_groups")}
            for k, v in dataset["splits"].items()
        },
        "val": val,
        "test": test,
        "subsets": subsets,
        "seconds": {
            "dataset": round(built - started, 1),
            "training": round(trained - built, 1),
            "total": round(time.time() - started, 1),
        },
        "versions": {
            "celmask": version("celmask"),
            "ultralytics": version("ultralytics"),
            "torch": version("torch"),
            "python": platform.python_version(),
        },
    }
    tmp = root / ".metrics.json.partial"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, root / "metrics.json")
    return metrics
