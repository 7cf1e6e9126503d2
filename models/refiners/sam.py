"""Segment Anything refiners: snap detector masks to the drawing's edges.

Two forms of the same idea (DESIGN.md, "SAM refinement"), both :class:`~celmask.models.refiners.base.Refiner`:

- :class:`SamRefiner`: prompts SAM with each instance's box *and* its mask, on one image
  embedding per frame shared by all the frame's instances (the cheap form);
- :class:`VoteRefiner`: the Anime-seg-yolov8 form (seed 004): SAM's automatic masks of
  the whole frame, each voted into the character whose eroded mask holds enough of it,
  plus the eroded mask's pixels no automatic mask covers.

Either keeps an instance's input mask where its answer disagrees with it
(:func:`celmask.tasks.core.masks.accept_refinement`), so random or wrong weights cost accuracy,
never a character::

    refiner = SamRefiner.from_checkpoint("vit_b")           # weights via celmask.models.weights
    refined = refiner.refine([frame.image], [instances])
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import cv2
import numpy as np

from celmask.models.device import auto_device
from celmask.models.weights import SAM_WEIGHTS, model_id, resolve_weights, weights_id
from celmask.tasks.core.errors import CelmaskError, first_line
from celmask.tasks.core.instances import Instances, mask_boxes
from celmask.tasks.core.masks import accept_refinement

if TYPE_CHECKING:
    from typing import Self  # typing.Self needs Python 3.11

    from segment_anything.modeling import Sam

SAM_CHECKPOINT_ENV = "CELMASK_SAM_CHECKPOINT"
"""Per-kind override: the path of the SAM checkpoint to use (see celmask.models.weights)."""
SAM_WIDTHS = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280, "default": 1280}
"""Image encoder width of each published SAM, to name the type a wrong checkpoint has."""
MASK_PROMPT_LOGIT = 10.0
"""Logit given to mask-prompt pixels fully inside (+) or outside (-) the mask. SAM was
trained on its own unthresholded low-res logits, which are about this large; the mask
encoder normalises per pixel, so the exact value matters little."""


def load_sam(
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[Sam, str]:
    """A ``Sam`` of ``model_type`` (``vit_b``, ``vit_l``, ``vit_h``) with the weights that
    :func:`~celmask.models.weights.resolve_weights` finds, on the CPU, and their id
    ``<type>:<file>@sha256:<hex>``. Wrong-type or unreadable weights: one-line error."""
    import torch
    from segment_anything import sam_model_registry

    path = sam_weights(model_type, checkpoint, cache_dir=cache_dir, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch raise many kinds for a bad file
        raise CelmaskError(
            path,
            f"cannot be read as a SAM checkpoint ({type(error).__name__}: {first_line(error)})",
            "pass a Segment Anything .pth file (refiner.checkpoint)",
        ) from error
    encoder = state.get("image_encoder.pos_embed") if isinstance(state, dict) else None
    if encoder is None:
        raise CelmaskError(
            path,
            "is not a Segment Anything checkpoint (no image encoder weights)",
            "pass a Segment Anything .pth file (refiner.checkpoint)",
        )
    width, expected = encoder.shape[-1], SAM_WIDTHS.get(model_type)
    if expected is not None and width != expected:
        actual = {w: t for t, w in SAM_WIDTHS.items() if t != "default"}.get(width)
        if actual:
            raise CelmaskError(
                path, f"is a SAM {actual} checkpoint, not {model_type}", f"set refiner.model to {actual}"
            )
        raise CelmaskError(
            path,
            f"is not a SAM {model_type} checkpoint (image encoder width {width}, not {expected})",
            "pass the checkpoint of the model type set in refiner.model",
        )
    sam = sam_model_registry[model_type]()
    try:
        sam.load_state_dict(state)
    except RuntimeError as error:
        raise CelmaskError(
            path,
            f"does not fit SAM {model_type} ({first_line(error)})",
            "pass the checkpoint of the model type set in refiner.model",
        ) from error
    return sam.eval(), _weights_name(model_type, path, cache_dir)


def sam_weights(
    model_type: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> Path:
    """The checkpoint :func:`load_sam` loads for these arguments, found and verified, not read."""
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise CelmaskError(
            model_type, "is not a SAM model type", f"set refiner.model to one of {sorted(sam_model_registry)}"
        )
    return resolve_weights(
        checkpoint,
        SAM_WEIGHTS.get(model_type),
        env_var=SAM_CHECKPOINT_ENV,
        cache_dir=cache_dir,
        download=download,
        key="refiner.checkpoint",
    )


def _weights_name(model_type: str, path: Path, cache_dir: str | os.PathLike | None) -> str:
    return f"{model_type}:{weights_id(path, cache_dir=cache_dir)}"


def sam_device(device: str = "auto") -> str:
    """``device``, or for "auto" cuda when present, else cpu: SAM's automatic mask
    generator needs float64, which Apple's mps lacks."""
    if device != "auto":
        return device
    found = auto_device()
    return "cpu" if found == "mps" else found


def mask_prompts(masks: np.ndarray, img_size: int, prompt_size: tuple[int, int]) -> np.ndarray:
    """(n, 1, h, w) float32 SAM ``mask_input`` logits of (n, H, W) bool masks, made the
    way SAM makes its low-res logits, inverted: the frame's longest side resized to the
    encoder's ``img_size``, padded bottom-right to a square, shrunk to ``prompt_size``
    (the prompt encoder's ``mask_input_size``, 256x256 for the published models).
    Edge pixels get in-between logits from the area each covers."""
    from segment_anything.utils.transforms import ResizeLongestSide

    n, height, width = masks.shape
    h, w = ResizeLongestSide.get_preprocess_shape(height, width, img_size)
    out = np.empty((n, 1, *prompt_size), np.float32)
    canvas = np.zeros((img_size, img_size), np.float32)
    for i, mask in enumerate(masks):
        canvas[:h, :w] = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        share = cv2.resize(canvas, prompt_size[::-1], interpolation=cv2.INTER_AREA)
        out[i, 0] = (2.0 * share - 1.0) * MASK_PROMPT_LOGIT
    return out


def accept_proposals(instances: Instances, proposals: np.ndarray) -> Instances:
    """``instances`` with each row's mask (and box) replaced by its proposal (n, H, W)
    where :func:`~celmask.tasks.core.masks.accept_refinement` allows it; ``data["refined"]`` says where."""
    accepted = np.array(
        [accept_refinement(before, after) for before, after in zip(instances.mask, proposals)], dtype=bool
    )
    xyxy = instances.xyxy.copy()
    xyxy[accepted] = mask_boxes(proposals[accepted])
    return Instances(
        mask=np.where(accepted[:, None, None], proposals, instances.mask),
        xyxy=xyxy,
        score=instances.score,
        class_id=instances.class_id,
        track_id=instances.track_id,
        data={**instances.data, "refined": accepted},
    )


class _SamBacked(ABC):
    """What both refiners share: the model on its device, the model id, loading from a
    checkpoint, and refining frame by frame through :func:`accept_proposals`."""

    kind: ClassVar[str]

    def __init__(self, sam: Sam, *, weights: str = "random-init", device: str = "auto") -> None:
        self.device = sam_device(device)
        self.sam = sam.to(self.device).eval()
        self.model_id = model_id(self.kind, version=weights)

    @classmethod
    def model_id_for(
        cls, model_type: str = "vit_b", checkpoint: str | os.PathLike | None = None, *, download: bool | None = None
    ) -> str:
        """The id :meth:`from_checkpoint` gives, from the checkpoint file alone (no model built)."""
        path = sam_weights(model_type, checkpoint, download=download)
        return model_id(cls.kind, version=_weights_name(model_type, path, None))

    @classmethod
    def from_checkpoint(
        cls,
        model_type: str = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        download: bool | None = None,
        device: str = "auto",
        **options,
    ) -> Self:
        """Build from SAM weights found by :func:`load_sam`; ``options`` go to the constructor."""
        sam, weights = load_sam(model_type, checkpoint, cache_dir=cache_dir, download=download)
        return cls(sam, weights=weights, device=device, **options)

    def refine(self, images: Sequence[np.ndarray], instances: Sequence[Instances]) -> list[Instances]:
        """One Instances per RGB uint8 image: same rows, accepted proposals swapped in."""
        if len(images) != len(instances):
            raise ValueError(f"refine needs one Instances per image, got {len(images)} images and {len(instances)}")
        out = []
        for image, inst in zip(images, instances):
            if image.shape[:2] != inst.size:
                raise ValueError(f"image is {image.shape[:2]}, its instances are {inst.size}")
            out.append(accept_proposals(inst, self.propose(image, inst)))
        return out

    @abstractmethod
    def propose(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        """(n, H, W) bool: the model's own answer for each row, before the guard."""


@dataclass(frozen=True)
class PromptConfig:
    """How :class:`SamRefiner` prompts SAM."""

    batch: int = 16
    """Instances whose prompts go through SAM's decoder at once."""

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


class SamRefiner(_SamBacked):
    """SAM prompted with each instance's box and mask (as ``mask_input`` logits), three
    candidate masks each, the one SAM rates best proposed. One image embedding per frame
    with instances; prompts go through the decoder ``config.batch`` instances at a time."""

    kind = "sam-prompt"

    def __init__(
        self, sam: Sam, *, weights: str = "random-init", device: str = "auto", config: PromptConfig = PromptConfig()
    ) -> None:
        from segment_anything import SamPredictor

        super().__init__(sam, weights=weights, device=device)
        self.predictor = SamPredictor(self.sam)
        self.config = config

    def propose(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        import torch

        proposals = np.zeros_like(instances.mask)
        rows = np.flatnonzero(instances.mask.any(axis=(1, 2)))  # an empty input is never replaced: no work for it
        if rows.size == 0:
            return proposals
        predictor = self.predictor
        with torch.inference_mode():
            predictor.set_image(image)
            boxes = predictor.transform.apply_boxes_torch(
                torch.as_tensor(instances.xyxy[rows], dtype=torch.float32, device=self.device), instances.size
            )
            prompts = torch.as_tensor(
                mask_prompts(
                    instances.mask[rows], self.sam.image_encoder.img_size, self.sam.prompt_encoder.mask_input_size
                ),
                device=self.device,
            )
            for start in range(0, rows.size, self.config.batch):
                part = slice(start, start + self.config.batch)
                masks, quality, _ = predictor.predict_torch(
                    None, None, boxes=boxes[part], mask_input=prompts[part], multimask_output=True
                )
                best = quality.argmax(dim=1)
                proposals[rows[part]] = masks[torch.arange(len(best)), best].cpu().numpy()
            predictor.reset_image()
        return proposals


@dataclass(frozen=True)
class VoteConfig:
    """Seed 004's settings (its write-up, section 4.2) unless noted."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.6
    stability_score_thresh: float = 0.8
    crop_n_layers: int = 1
    crop_n_points_downscale_factor: int = 1
    max_side: int = 1920
    """Frames larger than this are shrunk for the automatic masks (memory)."""
    vote_threshold: float = 0.3
    """An automatic mask joins a character when more than this share of it lies inside
    the character's eroded mask."""
    erode_radius: float = 2.0
    """Erosion radius in pixels at a 640-px longest side (the seed's detector masks),
    scaled to the frame."""
    erode_iterations: int = 3
    dilate_iterations: int = 2


def vote_masks(masks: np.ndarray, segments: Sequence[np.ndarray], config: VoteConfig = VoteConfig()) -> np.ndarray:
    """(n, H, W) bool voted masks of (n, H, W) bool detector masks from SAM's automatic
    ``segments`` (each (H, W) bool), as seed 004 does it per character:

    - each mask is eroded ``erode_iterations`` times and dilated ``dilate_iterations``
      times, so a detector mask that spills over the outline votes for no background;
    - a segment joins the character holding the largest share of it, if that share
      (|segment & eroded| / |segment|) exceeds ``vote_threshold``. The write-up calls
      the measure IoU; its code (``vote_mask_generate``) divides by the segment's area,
      which is what lets a small part (a hand, a ribbon) be voted in;
    - pixels no segment covers ("unlabelled") inside the eroded mask are added.

    The seed's final opening of the result is left out: it erases thin line art, and the
    refinement guard already decides whether the result may be used.
    """
    n, height, width = masks.shape
    radius = max(1, round(config.erode_radius * max(height, width) / 640))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    eroded = np.zeros_like(masks)
    for i, mask in enumerate(masks):
        shrunk = cv2.erode(mask.astype(np.uint8), kernel, iterations=config.erode_iterations)
        eroded[i] = cv2.dilate(shrunk, kernel, iterations=config.dilate_iterations) > 0
    covered = np.zeros((height, width), bool)
    voted = np.zeros_like(masks)
    for segment in segments:
        covered |= segment
        area = int(segment.sum())
        if area == 0 or n == 0:
            continue
        x0, y0, x1, y1 = mask_boxes(segment[None])[0].astype(int)
        share = (eroded[:, y0:y1, x0:x1] & segment[y0:y1, x0:x1]).sum(axis=(1, 2)) / area
        best = int(share.argmax())
        if share[best] > config.vote_threshold:
            voted[best] |= segment
    return voted | (eroded & ~covered)


class VoteRefiner(_SamBacked):
    """Seed 004's voting (:func:`vote_masks`) on ``SamAutomaticMaskGenerator`` masks of
    each frame that has instances."""

    kind = "sam-vote"

    def __init__(
        self, sam: Sam, *, weights: str = "random-init", device: str = "auto", config: VoteConfig = VoteConfig()
    ) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        super().__init__(sam, weights=weights, device=device)
        self.config = config
        self.generator = SamAutomaticMaskGenerator(
            self.sam,
            points_per_side=config.points_per_side,
            points_per_batch=config.points_per_batch,
            pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh,
            crop_n_layers=config.crop_n_layers,
            crop_n_points_downscale_factor=config.crop_n_points_downscale_factor,
        )

    def propose(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        if not instances.mask.any():
            return np.zeros_like(instances.mask)
        return vote_masks(instances.mask, self.segments(image), self.config)

    def segments(self, image: np.ndarray) -> list[np.ndarray]:
        """SAM's automatic masks of ``image`` at its size, (H, W) bool each."""
        import torch

        height, width = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(height, width))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        )
        with torch.inference_mode():
            records = self.generator.generate(small)
        masks = [r["segmentation"] for r in records]
        if scale == 1.0:
            return masks
        return [cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0 for m in masks]
