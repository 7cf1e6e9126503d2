"""Train and evaluate the character detector (an ultralytics YOLO-seg model), offline.

Plain functions, no Prefect (``flows/train.py`` orchestrates them)::

    from celmask.tasks.trainset.composites import build_dataset
    from celmask.models.training import train_detector, evaluate_detector

    data = build_dataset("runs/ds", train_images=600, val_images=150, test_images=150)
    best = train_detector(data, "runs/yolo", epochs=20, imgsz=320)       # .../weights/best.pt
    evaluate_detector(best, data, split="test")   # {"mask_map50": ..., "mask_map50_95": ..., "box_map50": ...}

Training follows the measured recipe in ../shared/notes/ultralytics.md: a model
built from its YAML (no weights, nothing downloaded), ``YOLO_OFFLINE`` and a
celmask-owned config directory with a local font (:mod:`celmask.models.ultralytics_env`),
an explicit ``close_mosaic`` (mosaic is otherwise off from the first epoch of short
runs), one warm-up epoch, no plots, no AMP, images cached in RAM. CPU training is
not bit-for-bit reproducible across machines; same seed, same machine, same result.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from celmask.models.ultralytics_env import ultralytics_offline
from celmask.tasks.core.errors import CelmaskError

DEFAULT_MODEL = "yolov8n-seg.yaml"
RUN_NAME = "train"
"""ultralytics writes ``<out_dir>/train/weights/{best,last}.pt``."""


def default_close_mosaic(epochs: int) -> int:
    """Epochs at the end trained without mosaic: about 15% of the run (0 for runs of
    1-2 epochs, where mosaic simply stays on)."""
    return 0 if epochs <= 2 else max(1, math.ceil(0.15 * epochs))


def _check_data(data_yaml: str | Path) -> Path:
    path = Path(data_yaml).resolve()
    if not path.is_file():
        raise CelmaskError(
            path, "dataset YAML not found", "build one with celmask.tasks.trainset.composites.build_dataset"
        )
    return path


def _split_images(data_yaml: Path, split: str) -> int | None:
    """How many images a split of ``data_yaml`` holds, a directory or a list file (None if neither)."""
    from ultralytics.utils import YAML

    spec = YAML.load(data_yaml)
    entry = spec.get(split)
    if not isinstance(entry, str):
        return None
    path = Path(entry)
    if not path.is_absolute():
        path = Path(spec.get("path") or data_yaml.parent) / path
    if path.suffix == ".txt" and path.is_file():  # a list of image paths, one a line
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    if not path.is_dir():
        return None
    return sum(1 for f in path.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))


def train_detector(
    data_yaml: str | Path,
    out_dir: str | Path,
    *,
    epochs: int,
    imgsz: int = 320,
    batch: int = 16,
    seed: int = 0,
    device: str = "cpu",
    model: str = DEFAULT_MODEL,
    close_mosaic: int | None = None,
    patience: int = 100,
    resume: bool = False,
) -> Path:
    """Train ``model`` (a ``*-seg.yaml`` to start from scratch, or a ``.pt`` to fine-tune)
    on ``data_yaml``; return the path of ``best.pt`` (best validation fitness).

    Runs in ``out_dir/train`` (replaced if present). ``close_mosaic`` defaults to
    :func:`default_close_mosaic`. ``resume``: go on from ``out_dir/train/weights/last.pt``
    (ultralytics restores the optimizer, the epoch and the arguments it was started
    with; ``epochs`` and the rest are then those of the first start). ultralytics saves
    ``last.pt`` after every epoch, so an interrupted run loses at most one.
    """
    if epochs < 1:
        raise CelmaskError("epochs", f"must be >= 1, got {epochs}")
    if imgsz < 32:
        raise CelmaskError("imgsz", f"must be >= 32, got {imgsz}")
    if batch < 1:
        raise CelmaskError("batch", f"must be >= 1, got {batch}")
    data = _check_data(data_yaml)
    out = Path(out_dir).resolve()
    run_dir = out / RUN_NAME
    ultralytics_offline()
    from ultralytics import YOLO

    if resume:
        last = run_dir / "weights" / "last.pt"
        if not last.is_file():
            raise CelmaskError(last, "no checkpoint to resume from", "start the run without --resume")
        yolo = YOLO(str(last))
        if yolo.ckpt.get("epoch", -1) < 0 or yolo.ckpt.get("optimizer") is None:
            # ultralytics strips epoch and optimizer from last.pt once its epochs are done:
            # the run was stopped in its final evaluation, so there is nothing left to train
            # (and resuming would start a new run on ultralytics' default dataset)
            return _best(run_dir)
        yolo.train(resume=True)
        return _best(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    yolo = YOLO(model)
    yolo.train(
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        seed=seed,
        deterministic=True,
        close_mosaic=default_close_mosaic(epochs) if close_mosaic is None else close_mosaic,
        warmup_epochs=min(1, epochs),
        patience=patience,
        plots=False,
        amp=False,
        cache="ram",
        pretrained=str(model).endswith(".pt"),  # False would drop the weights of a .pt to fine-tune
        workers=0,
        project=str(out),
        name=RUN_NAME,
        exist_ok=True,
    )
    return _best(run_dir)


def _best(run_dir: Path) -> Path:
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():  # ultralytics writes best.pt at the first epoch; keep last.pt as a fallback
        best = run_dir / "weights" / "last.pt"
    if not best.is_file():
        raise RuntimeError(f"training finished without weights in {run_dir / 'weights'}")
    return best


def evaluate_detector(
    weights: str | Path,
    data_yaml: str | Path,
    *,
    split: str = "val",
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    conf: float = 0.001,
    iou: float = 0.7,
) -> dict:
    """Validate ``weights`` on a split of ``data_yaml`` with ultralytics' validator.

    Returns ``mask_map50``, ``mask_map50_95``, ``box_map50``, ``box_map50_95``,
    ``mask_precision``, ``mask_recall`` (floats), ``split``, ``imgsz``, ``images``
    and ``instances`` (labelled characters in the split).
    ``imgsz`` defaults to the size the weights were trained at.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise CelmaskError(weights, "weights not found")
    data = _check_data(data_yaml)
    ultralytics_offline()
    from ultralytics import YOLO

    yolo = YOLO(str(weights))
    if imgsz is None:
        imgsz = int(yolo.overrides.get("imgsz") or 640)
    with tempfile.TemporaryDirectory(prefix="celmask-val-") as tmp:
        m = yolo.val(
            data=str(data),
            split=split,
            imgsz=imgsz,
            batch=batch,
            device=device,
            conf=conf,
            iou=iou,
            plots=False,
            save_json=False,
            workers=0,
            project=tmp,
            name="val",
            exist_ok=True,
            verbose=False,
        )
    return {
        "split": split,
        "imgsz": imgsz,
        "images": _split_images(data, split),
        "instances": int(sum(m.nt_per_class)),
        "mask_map50": float(m.seg.map50),
        "mask_map50_95": float(m.seg.map),
        "box_map50": float(m.box.map50),
        "box_map50_95": float(m.box.map),
        "mask_precision": float(m.seg.mp),
        "mask_recall": float(m.seg.mr),
    }
