"""Weight-free flow propagation: on generated episodes against their true masks, and on
small drawn scenes whose motion is known exactly."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from celmask.models.propagators.base import Guide
from celmask.models.propagators.optical_flow import OpticalFlowConfig, OpticalFlowPropagator
from celmask.tasks.synth import generate_episode, iter_truth_masks, load_truth
from celmask.tasks.video import iter_frames
from tests.support.scenes import CountingFrames, drawn_scene


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


class Episode:
    """A generated episode's unique drawings (held frames dropped, as the caller does) and
    one track's true mask in each."""

    def __init__(self, out, track: int) -> None:
        truth = load_truth(out)
        held = {i for start, end in truth.holds for i in range(start + 1, end)}
        shot = truth.shots[0]
        self.frames = {f.index: f.image for f in iter_frames(out / "episode.mp4", end=shot.end) if f.index not in held}
        self.truth = {}
        for index, ids, masks in iter_truth_masks(out, 0, shot.end):
            if index in self.frames:
                hit = np.flatnonzero(ids == track)
                self.truth[index] = masks[hit[0]] if len(hit) else np.zeros((truth.height, truth.width), bool)

    def run(self, first: int, last: int) -> list[int]:
        """Unique drawings from ``first`` to ``last`` inclusive, in that order (backward when last < first)."""
        step = 1 if last >= first else -1
        return [i for i in range(first, last + step, step) if i in self.frames]

    def guides(self, run: list[int]) -> list[Guide]:
        return [Guide(self.truth[i][None], np.array([self.truth[i].any()])) for i in run]

    def propagate(self, run: list[int], guided: bool = False) -> tuple[list[float], list[float]]:
        """IoU with the truth and confidence of the track's mask carried from ``run[0]`` along ``run``."""
        out = OpticalFlowPropagator().propagate(
            [self.frames[i] for i in run], self.truth[run[0]][None], self.guides(run) if guided else None
        )
        scores = [(iou(masks[0], self.truth[i]), float(confidence[0])) for i, (masks, confidence) in zip(run[1:], out)]
        assert len(scores) == len(run) - 1
        return [s[0] for s in scores], [s[1] for s in scores]


@pytest.fixture(scope="module")
def panning(tmp_path_factory) -> Episode:
    """Seed 18, shot 0: a pan on 3s; its one character crosses the frame (and starts to
    leave it at frame ~34)."""
    out = tmp_path_factory.mktemp("flow") / "ep18"
    generate_episode(out, seed=18, duration=3.0)
    return Episode(out, track=0)


@pytest.fixture(scope="module")
def walking(tmp_path_factory) -> Episode:
    """Seed 11, shot 0: a static camera on 2s; track 1 changes pose between drawings, which
    flow alone cannot follow for long."""
    out = tmp_path_factory.mktemp("flow") / "ep11"
    generate_episode(out, seed=11, duration=3.0)
    return Episode(out, track=1)


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


def test_follows_a_moving_character_forward(panning):
    run = panning.run(21, 33)
    assert len(run) >= 10
    assert np.linalg.norm(centroid(panning.truth[run[-1]]) - centroid(panning.truth[run[0]])) > 40  # it does move
    ious, _ = panning.propagate(run)
    assert min(ious) > 0.8, ious  # measured: 0.92..0.99


def test_follows_a_moving_character_in_reverse_order(panning):
    run = panning.run(33, 0)
    assert len(run) >= 25
    assert np.linalg.norm(centroid(panning.truth[run[-1]]) - centroid(panning.truth[run[0]])) > 100
    ious, _ = panning.propagate(run)
    assert np.mean(ious) > 0.8 and min(ious) > 0.7, ious  # measured: mean 0.87, min 0.80


def test_agreeing_detections_keep_a_long_run_right(walking):
    run = walking.run(0, 55)
    assert len(run) >= 25
    free, free_confidence = walking.propagate(run)
    guided, guided_confidence = walking.propagate(run, guided=True)
    assert np.mean(guided) > 0.93 and min(guided) > 0.85, guided  # measured: mean 0.99, min 0.94
    assert np.mean(free) < np.mean(guided) - 0.2  # flow alone drifts here (measured mean 0.42)
    assert free_confidence[-1] < 0.5 and guided_confidence[-1] > 0.8  # decays alone, recovers on agreement


@pytest.mark.parametrize("size", [(360, 640), (720, 1280)])
def test_a_translated_figure_is_followed(size):
    centres = [(200 + 7 * t, 180 + 3 * t) for t in range(12)]
    frames, truth = drawn_scene(*size, centres)
    out = list(OpticalFlowPropagator().propagate(frames, truth[:1]))
    assert len(out) == len(frames) - 1
    for (masks, confidence), expected in zip(out, truth[1:]):
        assert masks.shape == (1, *size) and masks.dtype == bool
        assert confidence.shape == (1,) and confidence.dtype == np.float32 and 0.0 <= confidence[0] <= 1.0
        assert iou(masks[0], expected) > 0.9


def test_a_large_jump_is_found_again():
    """Drawings on 2s jump far: 45 px a step is beyond what DIS matches for this figure."""
    frames, truth = drawn_scene(360, 640, [(150 + 45 * t, 200) for t in range(6)])
    ious = [iou(m[0], e) for (m, _), e in zip(OpticalFlowPropagator().propagate(frames, truth[:1]), truth[1:])]
    assert min(ious) > 0.85, ious


def test_a_figure_that_leaves_the_frame_ends_empty():
    frames, truth = drawn_scene(360, 640, [(520 + 25 * t, 200) for t in range(10)])
    assert not truth[-1].any() and truth[2].any()  # it leaves through the right edge
    out = list(OpticalFlowPropagator().propagate(frames, truth[:1]))
    for (masks, _), expected in zip(out, truth[1:]):
        if expected.sum() > 500:
            assert iou(masks[0], expected) > 0.8
    assert not out[-1][0].any() and not out[-2][0].any()


def test_confidence_decays_without_agreement_and_recovers_with_it():
    frames, truth = drawn_scene(360, 640, [(200 + 4 * t, 200) for t in range(8)])
    guides: list[Guide | None] = [None] * 8
    guides[6] = Guide(truth[6][None], np.array([True]))
    confidence = [float(c[0]) for _, c in OpticalFlowPropagator().propagate(frames, truth[:1], guides)]
    assert all(a > b for a, b in pairwise(confidence[:5])), confidence
    assert confidence[5] > confidence[4] + 0.1 and confidence[5] > 0.9, confidence


def test_a_detection_that_disagrees_is_not_fused():
    frames, truth = drawn_scene(360, 640, [(200 + 4 * t, 200) for t in range(4)])
    elsewhere = np.zeros_like(truth[0])
    elsewhere[20:80, 500:600] = True
    guides = [None] + [Guide(elsewhere[None], np.array([True]))] * 3
    out = list(OpticalFlowPropagator().propagate(frames, truth[:1], guides))
    assert not (out[-1][0][0] & elsewhere).any() and iou(out[-1][0][0], truth[-1]) > 0.9


def test_frames_are_read_one_step_at_a_time():
    frames, truth = drawn_scene(360, 640, [(200 + 4 * t, 200) for t in range(6)])
    counting = CountingFrames(frames)
    steps = OpticalFlowPropagator().propagate(counting, truth[:1])
    assert counting.read <= {0}
    next(steps)
    assert counting.read == {0, 1}
    next(steps)
    assert counting.read == {0, 1, 2}


def test_no_objects_and_a_lone_keyframe():
    frames, _ = drawn_scene(360, 640, [(200, 200), (204, 200), (208, 200)])
    out = list(OpticalFlowPropagator().propagate(frames, np.zeros((0, 360, 640), bool)))
    assert len(out) == 2
    for masks, confidence in out:
        assert masks.shape == (0, 360, 640) and masks.dtype == bool
        assert confidence.shape == (0,) and confidence.dtype == np.float32
    assert list(OpticalFlowPropagator().propagate(frames[:1], np.zeros((1, 360, 640), bool))) == []


def test_bad_input_is_refused():
    frames, truth = drawn_scene(360, 640, [(200, 200), (204, 200)])
    with pytest.raises(ValueError, match="masks must have shape"):
        OpticalFlowPropagator().propagate(frames, truth[0])
    with pytest.raises(ValueError, match="guides must be None or one per frame"):
        OpticalFlowPropagator().propagate(frames, truth[:1], [None])
    with pytest.raises(ValueError, match="preset"):
        OpticalFlowConfig(preset="slow")
    assert OpticalFlowPropagator(OpticalFlowConfig(preset="ultrafast")).model_id == "flow:dis-ultrafast"
