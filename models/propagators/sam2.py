"""SAM 2 video propagation through ultralytics: a memory-based propagator.

The keyframe's masks prompt SAM 2 (one object each) and its memory of the frames seen
so far segments every following frame. The frames' own detections (guides) are not fed
to the model, whose memory is what keeps masks steady; they only tell how far to trust
it (see :meth:`Sam2Propagator.propagate`).

ultralytics' ``SAM2VideoPredictor`` reads a whole video file; celmask hands frames over
one at a time from memory. So this module drives the predictor's own per-video state
and steps (``add_new_prompts``, ``propagate_in_video_preflight``, ``inference``) on
frames it letterboxes and normalises itself, the way the predictor does for a file
(written against ultralytics 8.4; its state is a plain dict, this module only creates
it and reads one score from it)::

    propagator = Sam2Propagator("sam2.1_t.pt@sha256:<hex>")  # resolved and checked by celmask.models.weights
    for masks, confidence in propagator.propagate(frames, key_masks, guides):
        ...
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from celmask.models.device import auto_device
from celmask.models.propagators.base import Guide
from celmask.models.propagators.optical_flow import check_inputs
from celmask.models.weights import SAM2_WEIGHTS, model_id, resolve_weights, split_pin
from celmask.tasks.core.errors import CelmaskError, first_line
from celmask.tasks.core.masks import mask_iou

if TYPE_CHECKING:
    import torch
    from ultralytics.models.sam.modules.sam import SAM2Model
    from ultralytics.models.sam.predict import SAM2VideoPredictor

SAM2_CHECKPOINT_ENV = "CELMASK_SAM2_CHECKPOINT"
"""Per-kind override: the path of the SAM 2 checkpoint to use (see celmask.models.weights)."""
_BUILD_LOCK = threading.Lock()
"""Held while ultralytics' SAM builder runs with its checkpoint reader swapped (see :func:`_load`)."""


@dataclass
class _Cursor:
    """What ``SAM2VideoPredictor.inference`` reads of its dataset: the frame's index."""

    frame: int


@dataclass(frozen=True)
class Sam2Config:
    """How :class:`Sam2Propagator` runs SAM 2 (its weights are the propagator's own argument)."""

    device: str = "auto"
    imgsz: int = 1024
    """SAM 2's working size, a multiple of 32."""
    agree_iou: float = 0.5
    """IoU with the carried mask at which a guide (the drawing's detection) agrees with it."""
    confidence_decay: float = 0.97
    """Confidence kept per step since a guide last agreed."""

    def __post_init__(self) -> None:
        if self.imgsz < 64 or self.imgsz % 32:
            raise ValueError(f"SAM 2 imgsz must be a multiple of 32 and >= 64, got {self.imgsz}")
        if not 0.0 <= self.agree_iou <= 1.0 or not 0.0 <= self.confidence_decay <= 1.0:
            raise ValueError(
                f"agree_iou and confidence_decay must be in [0, 1], got {self.agree_iou}, {self.confidence_decay}"
            )


class Sam2Propagator:
    """SAM 2 (ultralytics' ``sam2_*.pt`` / ``sam2.1_*.pt``) carrying masks by its memory."""

    def __init__(self, weights: str | os.PathLike, config: Sam2Config = Sam2Config()) -> None:
        """``weights``: a path, or an ultralytics file name (``sam2.1_b.pt``) looked for
        where :func:`~celmask.models.weights.resolve_weights` looks, pinned to its
        SHA-256 (``@sha256:HEX``: ultralytics publishes none); never downloaded unless asked."""
        path = sam2_weights(weights)
        self._setup(_load(path), model_id("sam2", path), config)

    @classmethod
    def from_model(cls, model: SAM2Model, model_id: str, config: Sam2Config = Sam2Config()) -> Sam2Propagator:
        """A propagator around an already built ``SAM2Model`` (tests: random weights)."""
        propagator = cls.__new__(cls)
        propagator._setup(model, model_id, config)
        return propagator

    def _setup(self, model: SAM2Model, model_id: str, config: Sam2Config) -> None:
        from celmask.models.ultralytics_env import ultralytics_offline

        ultralytics_offline()
        from ultralytics.models.sam.predict import SAM2VideoPredictor

        imgsz, device = config.imgsz, config.device
        predictor = SAM2VideoPredictor(
            overrides={
                "device": auto_device() if device == "auto" else device,
                "imgsz": imgsz,
                "verbose": False,
                "save": False,
            }
        )
        predictor.setup_model(model=model, verbose=False)
        predictor.model.set_binarize(True)  # as SAM2VideoPredictor.get_model does for the models it builds
        predictor.setup_source(np.zeros((imgsz, imgsz, 3), np.uint8))  # sets the model's and predictor's sizes
        self._predictor: SAM2VideoPredictor = predictor
        self.model_id = model_id
        self.config = config

    def propagate(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """See :meth:`celmask.models.propagators.base.Propagator.propagate`. Confidence: SAM 2's own
        score that the object is present, decayed by the steps since a guide last agreed
        with the mask (IoU at least ``agree_iou``)."""
        masks = check_inputs(frames, masks, guides)
        return self._steps(frames, masks, guides)

    def _steps(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import torch

        k, height, width = masks.shape
        if k == 0 or len(frames) < 2:  # nothing to track (or nowhere to): the model need not run
            for _ in range(1, len(frames)):
                yield np.zeros((0, height, width), bool), np.zeros(0, np.float32)
            return
        predictor = self._predictor
        state = predictor._init_state(len(frames))
        with torch.inference_mode():  # entered per step: a suspended generator must not leave it on for the caller
            predictor.inference_state = state
            state["im"] = self._image(frames[0])
            prompts = self._letterbox(masks.astype(np.float32), cv2.INTER_NEAREST, 0.0)
            for i in range(k):
                predictor.add_new_prompts(obj_id=i, masks=prompts[i : i + 1], frame_idx=0)
            predictor.propagate_in_video_preflight()
        steps_since_agreement = np.zeros(k, np.int64)
        for t in range(1, len(frames)):
            with torch.inference_mode():
                predictor.inference_state, predictor.dataset = state, _Cursor(t)  # another run may have stepped since
                logits, _ = predictor.inference(self._image(frames[t]))
                present = state["output_dict"]["non_cond_frame_outputs"][t]["object_score_logits"].sigmoid()
                out = self._to_frame(logits, height, width)
                present = present.float().cpu().numpy().reshape(k)
            steps_since_agreement += 1
            guide = guides[t] if guides is not None else None
            if guide is not None:
                agree = np.asarray(guide.present, bool) & (np.diag(mask_iou(out, guide.mask)) >= self.config.agree_iou)
                steps_since_agreement[agree] = 0
            yield out, (present * self.config.confidence_decay**steps_since_agreement).astype(np.float32)

    def _letterbox(self, images: np.ndarray, interpolation: int, fill: float) -> torch.Tensor:
        """(n, 1, imgsz, imgsz) or (n, 3, imgsz, imgsz) float32 tensor on the model's device:
        (n, H, W[, 3]) images scaled to fit ``imgsz`` and padded with ``fill`` at the bottom
        and right, as ultralytics' ``LetterBox(center=False)`` does for SAM."""
        import torch

        height, width = images.shape[1:3]
        scale = min(self.config.imgsz / height, self.config.imgsz / width)
        size = (round(width * scale), round(height * scale))
        out = np.full((len(images), self.config.imgsz, self.config.imgsz, *images.shape[3:]), fill, np.float32)
        for i, image in enumerate(images):
            out[i, : size[1], : size[0]] = cv2.resize(image, size, interpolation=interpolation)
        tensor = torch.from_numpy(out).to(self._predictor.device)
        return tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor[:, None]

    def _image(self, rgb: np.ndarray) -> torch.Tensor:
        """(1, 3, imgsz, imgsz): an RGB frame letterboxed (grey 114 padding) and normalised
        like the predictor's own input."""
        predictor = self._predictor
        return (self._letterbox(rgb[None].astype(np.float32), cv2.INTER_LINEAR, 114.0) - predictor.mean) / predictor.std

    def _to_frame(self, logits: torch.Tensor, height: int, width: int) -> np.ndarray:
        """(k, H, W) bool: (k, h, w) mask logits on the letterboxed square brought back to
        the frame, each pixel given to at most one object (the most certain one)."""
        import torch
        import torch.nn.functional as F

        size = (self.config.imgsz, self.config.imgsz)
        square = F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)
        scale = min(self.config.imgsz / height, self.config.imgsz / width)
        picture = square[..., : round(height * scale), : round(width * scale)]
        logits = F.interpolate(picture, size=(height, width), mode="bilinear", align_corners=False)[0]
        winner = logits.argmax(0, keepdim=True) == torch.arange(len(logits), device=logits.device)[:, None, None]
        return ((logits > 0) & winner).cpu().numpy()


def sam2_weights(weights: str | os.PathLike) -> Path:
    """The SAM 2 file ``weights`` names (see :class:`Sam2Propagator`), found and checked against its pin."""
    return resolve_weights(
        weights,
        SAM2_WEIGHTS.get(Path(split_pin(weights)[0]).stem),
        env_var=SAM2_CHECKPOINT_ENV,
        key="propagator.weights",
        pinned=True,
    )


def _load(path: Path) -> SAM2Model:
    """The SAM 2 model of an ultralytics checkpoint, its architecture picked by file name
    (``sam2_t.pt`` .. ``sam2.1_l.pt``) as ultralytics does; a bad file is a one-line error.

    ultralytics' builder reads the checkpoint with ``weights_only=False``, which runs
    whatever code a crafted file holds. A SAM 2 checkpoint is a state dict, tensors
    only, so here the builder's reader is ``torch.load(weights_only=True)``: the
    builder still picks the architecture (SAM 2.1's extra layers come from the file
    name), and anything but tensors is refused before it runs."""
    import torch

    from celmask.models.ultralytics_env import UNSAFE_FILE, ultralytics_offline

    ultralytics_offline()
    from ultralytics.models.sam import build

    if path.stem not in SAM2_WEIGHTS:
        raise CelmaskError(
            path,
            "is not named like an ultralytics SAM 2 checkpoint, so its size is unknown",
            f"name it after its model ({', '.join(sorted(SAM2_WEIGHTS))} + .pt)",
        )
    try:
        with _BUILD_LOCK:
            unsafe, build.torch_load = (
                build.torch_load,
                functools.partial(torch.load, map_location="cpu", weights_only=True),
            )
            try:
                return build.build_sam(str(path))
            finally:
                build.torch_load = unsafe
    except pickle.UnpicklingError as error:  # weights_only met something that is not a tensor
        raise CelmaskError(path, UNSAFE_FILE, "pass an ultralytics SAM 2 checkpoint (propagator.weights)") from error
    except Exception as error:  # torch and the state-dict loader raise many kinds for a bad file
        raise CelmaskError(
            path,
            f"cannot be loaded as {path.name} ({type(error).__name__}: {first_line(error)})",
            "pass an ultralytics SAM 2 checkpoint (propagator.weights)",
        ) from error
