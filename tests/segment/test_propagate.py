"""Forward/reverse propagation from keyframes with the real flow propagator on drawn
frames: carried into drawings without detections (only ``extend`` beyond them), handed
over to the detector where it keeps disagreeing, and the detection standing where the
flow cannot follow (a white flash); the flow shared by a shot's tracks changes no mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from celmask.models.propagators.optical_flow import OpticalFlowConfig, OpticalFlowPropagator
from celmask.tasks.core.config import load_config
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.core.types import Shot
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.keyframes import score_candidates
from celmask.tasks.segment.model_sets import build_models
from celmask.tasks.segment.propagate import PropagationConfig, propagate_track
from celmask.tasks.segment.shot import segment_shot
from celmask.tasks.synth import generate_episode, load_truth
from celmask.tasks.synth.unstable import UnstableConfig, write_unstable_detections

H, W = 180, 320


def drawing(x: int, y: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A textured set with an outlined flat-colour character at (x, y), and its mask."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(90, 200, (H, W, 3), dtype=np.uint8), (0, 0), 3)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (x, y + 30), (22, 34), 0, 0, 360, 1, -1)
    image[mask > 0] = (230, 120, 90)
    cv2.ellipse(image, (x, y + 30), (22, 34), 0, 0, 360, (20, 20, 20), 2)
    return image, mask > 0


def tracked(masks: list[np.ndarray | None]) -> list[Instances]:
    return [
        Instances.empty(H, W)
        if m is None
        else Instances.from_masks(m[None], score=np.array([0.9], np.float32), track_id=np.zeros(1, np.int32))
        for m in masks
    ]


def run(images, observed, **config):
    inst = tracked(observed)
    candidates = score_candidates(images, list(range(len(images))), inst)[0]
    return propagate_track(
        OpticalFlowPropagator(OpticalFlowConfig()), images, inst, candidates, "score", PropagationConfig(**config)
    )


def test_carried_back_from_late_detections_but_only_extend_drawings():
    images, truth = zip(*(drawing(60 + 6 * t) for t in range(10)))
    observed = [None] * 8 + [truth[8], truth[9]]
    result = run(list(images), observed, extend=3)
    assert sorted(result.mask) == [5, 6, 7, 8, 9]
    assert {c.step for c in result.keyframes} <= {8, 9}
    for step, mask in result.mask.items():
        assert mask_iou(mask[None], truth[step][None])[0, 0] > 0.8, step


def test_a_detection_the_flow_keeps_contradicting_takes_over():
    # the character jumps across the frame at drawing 5 (a cut-in the flow cannot follow)
    images, truth = zip(*(drawing(60 + 4 * t if t < 5 else 240 - 4 * t) for t in range(10)))
    result = run(list(images), list(truth))
    for step in range(10):
        assert mask_iou(result.mask[step][None], truth[step][None])[0, 0] > 0.8, step


def test_the_detection_stands_on_a_flash():
    images, truth = zip(*(drawing(60 + 5 * t) for t in range(8)))
    images = list(images)
    images[4] = np.full_like(images[4], 255)  # a white flash frame; the detector still saw the character
    result = run(images, list(truth))
    assert mask_iou(result.mask[4][None], truth[4][None])[0, 0] > 0.9
    assert 4 in result.detected


@pytest.fixture(scope="module")
def busy_shot(tmp_path_factory):
    """The first 32 frames of a generated 320x180 shot with three characters (seed 2016, shot 0),
    read through deliberately unstable detections so that tracks re-key."""
    out = tmp_path_factory.mktemp("shared") / "ep"
    generate_episode(out, seed=2016, duration=4.0, width=320, height=180)
    write_unstable_detections(out, out / "d.parquet", seed=1, config=UnstableConfig(level=1.0))
    s = load_truth(out).shots[0]
    config = load_config(SegmentConfig(), None, ["detector=file", f"detector.path={out / 'd.parquet'}", "refiner=none"])
    return out / "episode.mp4", Shot(s.index, s.start, s.start + 32, 0.0, 0.0), config


def masks_by_track(result) -> list[dict[int, tuple]]:
    return [
        {
            int(t): (np.packbits(m).tobytes(), float(score), int(src), int(key))
            for t, m, score, src, key in zip(
                inst.track_id, inst.mask, inst.score, inst.data["source"], inst.data["keyframe_frame"]
            )
        }
        for inst in result.instances
    ]


def test_flow_shared_across_tracks_and_directions_gives_the_same_masks(busy_shot):
    video, shot, config = busy_shot
    models = build_models(config)
    with models.propagator.sharing(budget=0) as off:  # nothing kept: every step computes its flow
        alone = segment_shot(video, shot, config, models=models)
    with models.propagator.sharing() as on:  # what segment_shot does by itself
        shared = segment_shot(video, shot, config, models=models)
    with models.propagator.sharing(budget=on.peak // 3) as small:  # a third kept: some recomputed
        squeezed = segment_shot(video, shot, config, models=models)
    assert len(shared.keyframes) >= 3
    assert masks_by_track(alone) == masks_by_track(shared) == masks_by_track(squeezed)
    assert alone.keyframes == shared.keyframes == squeezed.keyframes
    steps = len(shared.instances) - 1
    assert on.computed["flows"] <= steps < off.computed["flows"] / 2  # each pair of drawings once, both ways
    assert on.computed["pair"] <= 2 * steps
    assert small.computed["flows"] > on.computed["flows"]
