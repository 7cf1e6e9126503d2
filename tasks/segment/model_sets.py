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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celmask.models
from celmask.models.detectors.yolo import Detector, FileDetector, YoloConfig, YoloDetector, yolo_model_id
from celmask.models.propagators.base import Propagator
from celmask.models.refiners.base import Refiner
from celmask.models.weights import model_id
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


@dataclass(frozen=True)
class _Planned:
    """A model the settings name, before it is built: its id comes from the settings and
    the weight files, so a finished shot is recognised without loading weights."""

    model_id: str
    build: Callable[[], Any]


def _detector(config: SegmentConfig) -> _Planned:
    if config.detector == "file":
        if not config.detector_path:
            raise CelmaskError(
                "detector.path", "detector=file needs a Parquet file of detections", "pass --set detector.path=FILE"
            )
        path = Path(config.detector_path)
        if not path.is_file():
            raise CelmaskError(path, "detections file not found", "pass a Parquet file (detector.path)")
        return _Planned(model_id("file", path), lambda: FileDetector(path))
    weights = BUILTIN_DETECTOR if config.detector_weights == "builtin" else Path(config.detector_weights)
    if weights.suffix != ".yaml" and not weights.is_file():
        return _Planned("", lambda: YoloDetector(_yolo_config(config, weights)))  # fails with its one line
    return _Planned(yolo_model_id(weights), lambda: YoloDetector(_yolo_config(config, weights)))


def _yolo_config(config: SegmentConfig, weights: Path) -> YoloConfig:
    return YoloConfig(
        weights=str(weights),
        imgsz=config.detector_imgsz,
        conf=config.detector_conf,
        iou=config.detector_iou,
        classes=config.detector_classes,
        batch=config.detector_batch,
        device=config.device,
    )


def _propagator(config: SegmentConfig) -> _Planned | None:
    if config.propagator == "none":
        return None
    if config.propagator == "flow":
        from celmask.models.propagators.optical_flow import OpticalFlowPropagator, flow_model_id

        return _Planned(flow_model_id(config.flow), lambda: OpticalFlowPropagator(config.flow))
    from celmask.models.propagators.sam2 import Sam2Config, Sam2Propagator, sam2_weights

    if not config.propagator_weights:
        raise CelmaskError(
            "propagator.weights",
            "propagator=sam2 needs SAM 2 weights",
            "pass --set propagator.weights=sam2_t.pt or use propagator=flow",
        )
    weights = config.propagator_weights
    return _Planned(
        model_id("sam2", sam2_weights(weights)), lambda: Sam2Propagator(weights, Sam2Config(device=config.device))
    )


def _refiner(config: SegmentConfig) -> _Planned | None:
    if config.refiner == "none":
        return None
    if config.refiner == "pieces":
        from celmask.models.refiners.pieces import PIECES_MODEL_ID, PiecesRefiner

        return _Planned(PIECES_MODEL_ID, lambda: PiecesRefiner(config.pieces))
    from celmask.models.refiners.sam import SamRefiner, VoteRefiner

    cls = SamRefiner if config.refiner == "sam" else VoteRefiner
    return _Planned(
        cls.model_id_for(config.refiner_model, config.refiner_checkpoint),
        lambda: cls.from_checkpoint(config.refiner_model, config.refiner_checkpoint, device=config.device),
    )


def _plan(config: SegmentConfig) -> dict[str, _Planned]:
    planned = {"detector": _detector(config), "propagator": _propagator(config), "refiner": _refiner(config)}
    return {stage: p for stage, p in planned.items() if p is not None}


def model_ids(config: SegmentConfig) -> dict[str, str]:
    """Stage -> model id of the models ``config`` names, as :attr:`Models.ids` will have
    them, from the settings and weight files alone: no weights are loaded (a re-run of a
    finished shot needs no model and no GPU slot). Bad settings fail as building would."""
    planned = _plan(config)
    if not planned["detector"].model_id:
        planned["detector"].build()  # the weights are missing: its own one-line error
    return {stage: p.model_id for stage, p in planned.items()}


def build_models(config: SegmentConfig) -> Models:
    """A new set of the detector, propagator and refiner ``config`` names, for a caller
    that keeps it (one thread at a time); shots borrow theirs with :func:`lend_models`."""
    planned = _plan(config)
    built = {stage: p.build() for stage, p in planned.items()}
    for stage, model in built.items():
        if planned[stage].model_id and model.model_id != planned[stage].model_id:
            raise RuntimeError(f"{stage}: built {model.model_id}, planned {planned[stage].model_id}")
    return Models(built["detector"], built.get("propagator"), built.get("refiner"))


def build_followers(config: SegmentConfig) -> tuple[Propagator | None, Refiner | None]:
    """The propagator and refiner ``config`` names, without the detector (whose load
    takes seconds): all a hand correction needs to carry a track (tasks/run/correct.py)."""
    propagator, refiner = _propagator(config), _refiner(config)
    return (propagator.build() if propagator else None, refiner.build() if refiner else None)


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
