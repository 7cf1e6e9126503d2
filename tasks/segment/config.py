"""Every setting of per-shot segmentation, with its default and the values it may take
(``celmask config`` lists them; keys and rules as in :mod:`celmask.tasks.core.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from celmask.models.propagators.optical_flow import OpticalFlowConfig
from celmask.models.refiners.pieces import PiecesConfig
from celmask.tasks.core.config import NON_NEGATIVE, SHARE, OneOf, Range, check_rules
from celmask.tasks.segment.evidence import EvidenceConfig
from celmask.tasks.segment.keyframes import KeyframeConfig
from celmask.tasks.segment.propagate import PropagationConfig
from celmask.tasks.segment.tracks import TrackConfig
from celmask.tasks.shots.holds import HOLD_BLOCK, HOLD_THRESHOLD

DETECTORS = ("yolo", "file")
PROPAGATORS = ("flow", "sam2", "none")
REFINERS = ("sam", "vote", "pieces", "none")
KEYFRAMES = ("score", "confidence")
SAM_MODELS = ("vit_b", "vit_l", "vit_h")


@dataclass(frozen=True)
class SegmentConfig:
    RENAMED: ClassVar[dict[str, str]] = {"detector.device": "device", "tracks.min_drawings": "evidence.min_drawings"}
    """Old keys and what they are now: a one-line error points from one to the other."""

    device: str = "auto"
    """Torch device of every model (detector, SAM 2, SAM): auto (cuda, then mps, then cpu;
    SAM: cuda, else cpu) or a torch device such as cpu or cuda:1."""
    detector: Annotated[str, OneOf(DETECTORS)] = "yolo"
    """yolo: ultralytics YOLO-seg weights (detector.weights); file: per-frame instances
    from a Parquet file (detector.path)."""
    detector_weights: str = "builtin"
    """YOLO -seg weights: a .pt path, or builtin (celmask's detector, trained on real anime art and generated data)."""
    detector_path: str | None = None
    """Parquet of per-frame detections for detector=file."""
    detector_imgsz: Annotated[int, Range(32)] = 416
    """Inference image size (the builtin detector was fine-tuned at 416)."""
    detector_conf: Annotated[float, SHARE] = 0.25
    """Minimum detection confidence."""
    detector_iou: Annotated[float, SHARE] = 0.7
    """IoU of non-maximum suppression."""
    detector_classes: Annotated[tuple[int, ...] | None, NON_NEGATIVE] = None
    """Class ids to keep (none: all)."""
    detector_batch: Annotated[int, Range(1)] = 8
    """Drawings per inference batch (halved on CUDA out-of-memory)."""
    propagator: Annotated[str, OneOf(PROPAGATORS)] = "flow"
    """flow: dense optical flow, no weights; sam2: SAM 2 video propagation (propagator.weights); none: per-frame detections only."""
    propagator_weights: str | None = None
    """SAM 2 weights for propagator=sam2 (e.g. sam2_t.pt)."""
    refiner: Annotated[str, OneOf(REFINERS)] = "pieces"
    """sam: Segment Anything prompted by box and mask (refiner.checkpoint); vote: SAM
    automatic masks voted in; pieces: the drawing's own colour pieces, no weights; none."""
    refiner_checkpoint: str | None = None
    """Segment Anything checkpoint for refiner=sam/vote (path, or found in the weights cache)."""
    refiner_model: Annotated[str, OneOf(SAM_MODELS)] = "vit_b"
    """Segment Anything model type of refiner.checkpoint: vit_b, vit_l or vit_h."""
    keyframe: Annotated[str, OneOf(KEYFRAMES)] = "score"
    """score: the combined keyframe score; confidence: detector confidence alone (baseline)."""
    keyframe_weights: Annotated[dict[str, float], NON_NEGATIVE] = field(
        default_factory=lambda: dict(KeyframeConfig().weights)
    )
    """Weight of each keyframe score component."""
    keyframe_neighbours: Annotated[int, NON_NEGATIVE] = KeyframeConfig.neighbours
    """Drawings either side a candidate's agreement is measured against."""
    work_size: Annotated[int, Range(32)] = 960
    """Long side (pixels) frames are segmented at; larger sources are scaled down."""
    hold_reuse: bool = True
    """Run the models once per unique drawing and copy to held frames; false runs them on
    every frame (the per-frame baseline: slower, and it flickers on held drawings)."""
    hold_threshold: Annotated[float, Range(0, 255)] = HOLD_THRESHOLD
    """Largest block change (grey levels) of a frame that still shows the previous drawing."""
    hold_block: Annotated[int, Range(1)] = HOLD_BLOCK
    """Block edge (pixels at 160 wide) of the held-frame test."""
    tracks: TrackConfig = field(default_factory=TrackConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    flow: OpticalFlowConfig = field(default_factory=OpticalFlowConfig)
    pieces: PiecesConfig = field(default_factory=PiecesConfig)

    def __post_init__(self) -> None:
        check_rules(self)
        KeyframeConfig(self.keyframe_weights, self.keyframe_neighbours)
