"""Every setting of per-shot segmentation, with its default (``celmask config`` lists
them; keys as in :mod:`celmask.tasks.core.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from celmask.models.propagators.optical_flow import OpticalFlowConfig
from celmask.models.refiners.pieces import PiecesConfig
from celmask.tasks.shots.holds import HOLD_BLOCK, HOLD_THRESHOLD
from celmask.tasks.segment.keyframes import KeyframeConfig
from celmask.tasks.segment.propagate import PropagationConfig
from celmask.tasks.segment.tracks import TrackConfig

DETECTORS = ("yolo", "file")
PROPAGATORS = ("flow", "sam2", "none")
REFINERS = ("sam", "vote", "pieces", "none")
KEYFRAMES = ("score", "confidence")
SAM_MODELS = ("vit_b", "vit_l", "vit_h")


@dataclass(frozen=True)
class SegmentConfig:
    detector: str = "yolo"
    """yolo: ultralytics YOLO-seg weights (detector.weights); file: per-frame instances
    from a Parquet file (detector.path)."""
    detector_weights: str = "builtin"
    """YOLO -seg weights: a .pt path, or builtin (celmask's detector trained on generated data)."""
    detector_path: str | None = None
    """Parquet of per-frame detections for detector=file."""
    detector_imgsz: int = 416
    """Inference image size (the builtin detector was fine-tuned at 416)."""
    detector_conf: float = 0.25
    """Minimum detection confidence."""
    detector_iou: float = 0.7
    """IoU of non-maximum suppression."""
    detector_classes: tuple[int, ...] | None = None
    """Class ids to keep (none: all)."""
    detector_batch: int = 8
    """Drawings per inference batch (halved on CUDA out-of-memory)."""
    detector_device: str = "auto"
    """auto (cuda, then mps, then cpu) or a torch device."""
    propagator: str = "flow"
    """flow: dense optical flow, no weights; sam2: SAM 2 video propagation (propagator.weights); none: per-frame detections only."""
    propagator_weights: str | None = None
    """SAM 2 weights for propagator=sam2 (e.g. sam2_t.pt)."""
    refiner: str = "pieces"
    """sam: Segment Anything prompted by box and mask (refiner.checkpoint); vote: SAM
    automatic masks voted in; pieces: the drawing's own colour pieces, no weights; none."""
    refiner_checkpoint: str | None = None
    """Segment Anything checkpoint for refiner=sam/vote (path, or found in the weights cache)."""
    refiner_model: str = "vit_b"
    """Segment Anything model type of refiner.checkpoint: vit_b, vit_l or vit_h."""
    keyframe: str = "score"
    """score: the combined keyframe score; confidence: detector confidence alone (baseline)."""
    keyframe_weights: dict[str, float] = field(default_factory=lambda: dict(KeyframeConfig().weights))
    """Weight of each keyframe score component."""
    keyframe_neighbours: int = KeyframeConfig.neighbours
    """Drawings either side a candidate's agreement is measured against."""
    work_size: int = 960
    """Long side (pixels) frames are segmented at; larger sources are scaled down."""
    hold_reuse: bool = True
    """Run the models once per unique drawing and copy to held frames; false runs them on
    every frame (the per-frame baseline: slower, and it flickers on held drawings)."""
    hold_threshold: float = HOLD_THRESHOLD
    """Largest block change (grey levels) of a frame that still shows the previous drawing."""
    hold_block: int = HOLD_BLOCK
    """Block edge (pixels at 160 wide) of the held-frame test."""
    tracks: TrackConfig = field(default_factory=TrackConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    flow: OpticalFlowConfig = field(default_factory=OpticalFlowConfig)
    pieces: PiecesConfig = field(default_factory=PiecesConfig)

    def __post_init__(self) -> None:
        for name, allowed in (("detector", DETECTORS), ("propagator", PROPAGATORS), ("refiner", REFINERS),
                              ("keyframe", KEYFRAMES), ("refiner_model", SAM_MODELS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32, got {self.work_size}")
        KeyframeConfig(self.keyframe_weights, self.keyframe_neighbours)
