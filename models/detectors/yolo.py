"""Per-frame character detectors behind one small interface.

``Detector.detect(frames) -> list[Instances]``: one :class:`~celmask.tasks.core.instances.Instances`
per frame, masks at the frame's own resolution. Two backends:

- :class:`YoloDetector`: any ultralytics YOLO *segmentation* weights (v8/11 ``-seg``),
  batched, on the best device there is (cuda, then mps, then cpu; fp16 on cuda);
- :class:`FileDetector`: per-frame instances produced elsewhere (another segmenter, or
  deliberately perturbed ones for benchmarks), read from one Parquet file with the
  manifest's columns ``frame_index, label, score, height, width, mask_rle``.

    detector = YoloDetector(YoloConfig(weights="models/trained/detector.pt"))
    instances = detector.detect(frames)        # frames: list[celmask.tasks.core.types.Frame]
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from celmask.models.device import auto_device
from celmask.models.weights import model_id
from celmask.tasks.core.errors import CelmaskError, TransientError, first_line, is_out_of_memory
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.types import Frame


class Detector(Protocol):
    model_id: str
    """What produced the detections, for the manifest (name and weight checksum)."""

    def detect(self, frames: Sequence[Frame]) -> list[Instances]:
        """One Instances per frame, in order, masks at the frame's resolution."""
        ...


@dataclass(frozen=True)
class YoloConfig:
    weights: str
    """A ``.pt`` file of YOLO segmentation weights, or a model ``.yaml`` (random weights: tests)."""
    imgsz: int = 320
    conf: float = 0.25
    iou: float = 0.7
    classes: tuple[int, ...] | None = None
    """Keep only these class ids (None: all)."""
    batch: int = 8
    device: str = "auto"
    half: bool | None = None
    """fp16 inference; None: on cuda only."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"detector conf and iou must be in [0, 1], got {self.conf}, {self.iou}")
        if self.imgsz < 32 or self.batch < 1:
            raise ValueError(f"detector imgsz must be >= 32 and batch >= 1, got {self.imgsz}, {self.batch}")


def yolo_model_id(weights: Path) -> str:
    """The id of a :class:`YoloDetector` on ``weights`` (a model ``.yaml``: random weights)."""
    return (
        model_id("yolo", version=f"{weights.name}@random-init")
        if weights.suffix == ".yaml"
        else model_id("yolo", weights)
    )


class YoloDetector:
    """ultralytics YOLO segmentation on RGB frames; CUDA out-of-memory halves the batch."""

    def __init__(self, config: YoloConfig) -> None:
        from celmask.models.ultralytics_env import UNSAFE_FILE, ultralytics_offline

        ultralytics_offline()
        from ultralytics import YOLO

        weights = Path(config.weights)
        if weights.suffix != ".yaml" and not weights.is_file():
            raise CelmaskError(
                weights,
                "detector weights not found",
                "train them with `celmask train OUT` or pass the path of YOLO -seg weights (detector.weights)",
            )
        try:
            self.model = YOLO(str(weights))
        except Exception as error:  # torch/ultralytics raise many kinds for a bad file
            if isinstance(error.__cause__, pickle.UnpicklingError):  # safe loading met something not on its allow-list
                raise CelmaskError(weights, UNSAFE_FILE, "pass an ultralytics YOLO -seg .pt file") from error
            raise CelmaskError(
                weights,
                f"cannot load detector weights ({type(error).__name__}: {first_line(error)})",
                "pass an ultralytics YOLO -seg .pt file",
            ) from error
        if self.model.task != "segment":
            raise CelmaskError(
                weights,
                f"is a YOLO {self.model.task} model, not a segmentation model",
                "use -seg weights (e.g. yolov8n-seg.pt or celmask's trained detector)",
            )
        self.config = config
        self.device = auto_device() if config.device == "auto" else config.device
        self.half = self.device.startswith("cuda") if config.half is None else config.half
        self.model_id = yolo_model_id(weights)
        self._batch = config.batch

    def detect(self, frames: Sequence[Frame]) -> list[Instances]:
        out: list[Instances] = []
        start = 0
        while start < len(frames):
            chunk = frames[start : start + self._batch]
            try:
                out += self._predict(chunk)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if self._batch == 1:
                    raise TransientError(
                        f"detector on {self.device}",
                        "out of memory even one frame at a time",
                        "lower detector.imgsz or work_size, free the GPU, or set device=cpu",
                    ) from error
                self._batch = max(1, self._batch // 2)  # retry this chunk smaller
                _empty_cuda_cache()
                continue
            start += len(chunk)
        return out

    def _predict(self, frames: Sequence[Frame]) -> list[Instances]:
        import torch

        cfg = self.config
        with torch.inference_mode():
            results = self.model.predict(
                [np.ascontiguousarray(f.image[..., ::-1]) for f in frames],  # ultralytics wants BGR arrays
                imgsz=cfg.imgsz,
                conf=cfg.conf,
                iou=cfg.iou,
                classes=list(cfg.classes) if cfg.classes else None,
                device=self.device,
                retina_masks=True,
                verbose=False,
                **({"half": True} if self.half else {}),  # ultralytics 8.4 warns on half=False too
            )
        return [_to_instances(r, f.image.shape[:2]) for r, f in zip(results, frames)]


def _to_instances(result, size: tuple[int, int]) -> Instances:
    """ultralytics Results -> Instances at the frame's resolution (retina masks)."""
    if result.masks is None or len(result.boxes) == 0:
        return Instances.empty(*size)
    masks = result.masks.data.cpu().numpy() > 0.5
    if masks.shape[1:] != size:  # ultralytics rounds odd sizes; bring them back exactly
        import cv2

        masks = np.stack(
            [cv2.resize(m.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0 for m in masks]
        )
    return Instances.from_masks(
        masks,
        score=result.boxes.conf.cpu().numpy(),
        class_id=result.boxes.cls.cpu().numpy().astype(np.int32),
    )


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class FileDetector:
    """Instances read from a Parquet file (columns ``frame_index, label, score,
    height, width, mask_rle``; COCO compressed RLE counts). Reads only the rows of
    the frames asked for; rows whose label is not one of ``labels`` are skipped."""

    COLUMNS = ("frame_index", "label", "score", "height", "width", "mask_rle")

    def __init__(self, path: str | Path, labels: Sequence[str] = ("character",)) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.is_file():
            raise CelmaskError(self.path, "detections file not found", "pass a Parquet file (detector.path)")
        try:
            schema = pq.read_schema(self.path)
        except Exception as error:
            raise CelmaskError(
                self.path, f"is not a Parquet file ({error})", "pass a Parquet file of detections"
            ) from error
        missing = [c for c in self.COLUMNS if c not in schema.names]
        if missing:
            raise CelmaskError(
                self.path, f"lacks the columns {missing}", f"a detections file needs {list(self.COLUMNS)}"
            )
        self.labels = list(labels)
        self.model_id = model_id("file", self.path)

    def detect(self, frames: Sequence[Frame]) -> list[Instances]:
        import pyarrow.parquet as pq
        from pycocotools import mask as mask_util

        wanted = sorted({f.index for f in frames})
        table = pq.read_table(self.path, columns=list(self.COLUMNS), filters=[("frame_index", "in", wanted)])
        table = table.sort_by([("frame_index", "ascending"), ("score", "descending")])
        rows = table.to_pydict()
        by_frame: dict[int, list[int]] = {}
        for i, (index, label) in enumerate(zip(rows["frame_index"], rows["label"])):
            if label in self.labels:  # rows of other labels (a general segmenter's "car") are not characters
                by_frame.setdefault(index, []).append(i)
        out = []
        for frame in frames:
            h, w = frame.image.shape[:2]
            picked = by_frame.get(frame.index, [])
            if not picked:
                out.append(Instances.empty(h, w))
                continue
            masks = []
            for i in picked:
                if (rows["height"][i], rows["width"][i]) != (h, w):
                    raise CelmaskError(
                        self.path,
                        f"frame {frame.index}: masks are {rows['height'][i]}x{rows['width'][i]}, "
                        f"the video frame is {h}x{w}",
                        "produce the detections at the video's resolution",
                    )
                rle = {"size": [h, w], "counts": rows["mask_rle"][i].encode()}
                masks.append(mask_util.decode(rle).astype(bool))
            out.append(
                Instances.from_masks(
                    np.stack(masks),
                    score=np.array([rows["score"][i] for i in picked], np.float32),
                    class_id=np.array([self.labels.index(rows["label"][i]) for i in picked], np.int32),
                )
            )
        return out
