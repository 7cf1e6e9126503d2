"""Build the models a configuration names, and lend them out shot by shot.

Loading weights takes seconds and a worker segments many shots, so a process keeps
the models it built, by the settings that define them, and lends a set to one shot
at a time (:func:`lend_models`): an ultralytics model keeps predictor state between
calls and is not safe to use from two threads at once. A process never holds more
sets than shots it segmented at once, which matters for large models on a GPU. The
shot code only ever sees the three small interfaces (detector, propagator, refiner).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import celmask.models
from celmask.models.detectors.yolo import Detector, FileDetector, YoloConfig, YoloDetector
from celmask.models.propagators.base import Propagator
from celmask.models.refiners.base import Refiner
from celmask.tasks.core.config import flatten
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.segment.config import SegmentConfig

BUILTIN_DETECTOR = Path(celmask.models.__file__).resolve().parent / "trained" / "detector.pt"
"""celmask's detector, trained on real anime art and generated data (models/trained/README.md says how)."""

MODEL_KEYS = ("detector", "propagator", "refiner", "flow", "pieces")
"""Settings that change which models are built (the rest only change how they are used)."""


@dataclass(frozen=True)
class Models:
    detector: Detector
    propagator: Propagator | None
    refiner: Refiner | None

    @property
    def ids(self) -> dict[str, str]:
        """Stage -> model id (name and weight checksum), for the manifest."""
        out = {"detector": self.detector.model_id}
        if self.propagator is not None:
            out["propagator"] = self.propagator.model_id
        if self.refiner is not None:
            out["refiner"] = self.refiner.model_id
        return out


_IDLE: dict[str, list[Models]] = {}
"""Built sets not lent out now, by :func:`_key`."""
_IDLE_LOCK = threading.Lock()


def _detector(config: SegmentConfig) -> Detector:
    if config.detector == "file":
        if not config.detector_path:
            raise CelmaskError(
                "detector.path", "detector=file needs a Parquet file of detections", "pass --set detector.path=FILE"
            )
        return FileDetector(config.detector_path)
    weights = str(BUILTIN_DETECTOR) if config.detector_weights == "builtin" else config.detector_weights
    return YoloDetector(
        YoloConfig(
            weights=weights,
            imgsz=config.detector_imgsz,
            conf=config.detector_conf,
            iou=config.detector_iou,
            classes=config.detector_classes,
            batch=config.detector_batch,
            device=config.device,
        )
    )


def _propagator(config: SegmentConfig) -> Propagator | None:
    if config.propagator == "none":
        return None
    if config.propagator == "flow":
        from celmask.models.propagators.optical_flow import OpticalFlowPropagator

        return OpticalFlowPropagator(config.flow)
    from celmask.models.propagators.sam2 import Sam2Propagator

    if not config.propagator_weights:
        raise CelmaskError(
            "propagator.weights",
            "propagator=sam2 needs SAM 2 weights",
            "pass --set propagator.weights=sam2_t.pt or use propagator=flow",
        )
    return Sam2Propagator(config.propagator_weights, device=config.device)


def _refiner(config: SegmentConfig) -> Refiner | None:
    if config.refiner == "none":
        return None
    if config.refiner == "pieces":
        from celmask.models.refiners.pieces import PiecesRefiner

        return PiecesRefiner(config.pieces)
    from celmask.models.refiners.sam import SamRefiner, VoteRefiner

    cls = SamRefiner if config.refiner == "sam" else VoteRefiner
    return cls.from_checkpoint(config.refiner_model, config.refiner_checkpoint, device=config.device)


def build_models(config: SegmentConfig) -> Models:
    """A new set of the detector, propagator and refiner ``config`` names, for a caller
    that keeps it (one thread at a time); shots borrow theirs with :func:`lend_models`."""
    return Models(_detector(config), _propagator(config), _refiner(config))


def _key(config: SegmentConfig) -> str:
    return json.dumps({k: v for k, v in flatten(config).items() if k.split(".")[0] in MODEL_KEYS}, sort_keys=True)


@contextlib.contextmanager
def lend_models(config: SegmentConfig) -> Iterator[Models]:
    """Models for one shot: a set built earlier for the same model settings that no
    one is using now, else a new one; kept for the next shot afterwards."""
    key = _key(config)
    with _IDLE_LOCK:
        idle = _IDLE.setdefault(key, [])
        lent = idle.pop() if idle else None
    if lent is None:
        lent = build_models(config)  # outside the lock: seconds, and may fail on bad weights
    try:
        yield lent
    finally:
        with _IDLE_LOCK:
            _IDLE[key].append(lent)


def preload_models(config: SegmentConfig) -> None:
    """Build a set now, so that bad weights fail at once rather than in every shot; the
    first shot borrows it."""
    with lend_models(config):
        pass
