"""SAM 2 propagation through ultralytics, on a SAM 2 tiny built here with random weights:
the code path (prompting, stepping the predictor frame by frame, bringing masks back to
the frame) and its contract (shapes, laziness, errors). Random weights make meaningless
masks, so mask quality is not tested here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from celmask.models.propagators.base import Guide
from celmask.models.propagators.sam2 import Sam2Config, Sam2Propagator
from celmask.tasks.core.errors import CelmaskError
from tests.support.scenes import CountingFrames, drawn_scene

H, W = 180, 320


@pytest.fixture(scope="module")
def sam2_tiny():
    import torch

    from celmask.models.ultralytics_env import ultralytics_offline

    ultralytics_offline()
    from ultralytics.models.sam.build import build_sam2_t

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_sam2_t()


@pytest.fixture(scope="module")
def propagator(sam2_tiny) -> Sam2Propagator:
    return Sam2Propagator.from_model(sam2_tiny, "sam2:random", Sam2Config(device="cpu", imgsz=256))


def two_figures(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    frames, first = drawn_scene(H, W, [(150 + 6 * t, 180) for t in range(n)])
    _, second = drawn_scene(H, W, [(450 - 6 * t, 200) for t in range(n)])
    return frames, np.stack([first[0], second[0]])


def test_steps_frame_by_frame_with_the_contract_shapes(propagator):
    import torch

    frames, masks = two_figures(4)
    counting = CountingFrames(frames)
    steps = propagator.propagate(counting, masks)
    assert counting.read <= {0}
    out = [next(steps)]
    assert counting.read == {0, 1}  # lazy: one frame per step
    assert not torch.is_inference_mode_enabled()  # not left on while the generator waits
    out += list(steps)
    assert len(out) == 3 and counting.read == {0, 1, 2, 3}
    for m, confidence in out:
        assert m.shape == (2, H, W) and m.dtype == bool
        assert not (m[0] & m[1]).any()  # a pixel belongs to one object at most
        assert confidence.shape == (2,) and confidence.dtype == np.float32
        assert ((confidence >= 0) & (confidence <= 1)).all()


@pytest.mark.slow
def test_runs_in_turn_keep_their_own_memory(propagator):
    frames, masks = two_figures(3)
    alone = [list(propagator.propagate(f, masks[i : i + 1])) for i, f in enumerate((frames, frames[::-1]))]
    forward, backward = propagator.propagate(frames, masks[:1]), propagator.propagate(frames[::-1], masks[1:])
    in_turn = [[], []]
    for _ in range(2):
        in_turn[0].append(next(forward))
        in_turn[1].append(next(backward))
    for a, b in zip(alone, in_turn):
        for (mask_a, confidence_a), (mask_b, confidence_b) in zip(a, b):
            assert np.array_equal(mask_a, mask_b) and np.allclose(confidence_a, confidence_b)


def test_reverse_order_with_guides(propagator):
    frames, masks = two_figures(4)
    frames = frames[::-1]
    guides = [None] + [Guide(masks, np.array([True, False]))] * 3
    out = list(propagator.propagate(frames, masks, guides))
    assert [m.shape for m, _ in out] == [(2, H, W)] * 3


def test_no_objects_runs_nothing(propagator):
    frames, _ = two_figures(3)
    counting = CountingFrames(frames)
    out = list(propagator.propagate(counting, np.zeros((0, H, W), bool)))
    assert [(m.shape, c.shape) for m, c in out] == [((0, H, W), (0,))] * 2
    assert counting.read <= {0}
    assert list(propagator.propagate(frames[:1], np.zeros((2, H, W), bool))) == []


def test_masks_come_back_to_the_frame_where_they_were(propagator):
    """The letterbox into the model's square and back is exact up to the model's 1/4
    resolution: a mask sent in as logits at the decoder's size returns onto itself."""
    import torch.nn.functional as F

    _, masks = two_figures(1)
    square = propagator._letterbox(masks.astype(np.float32), cv2.INTER_NEAREST, 0.0) * 20 - 10  # (k, 1, S, S) logits
    low = F.interpolate(square, scale_factor=0.25, mode="bilinear", align_corners=False)[:, 0]
    back = propagator._to_frame(low, H, W)
    for a, b in zip(back, masks):
        assert np.count_nonzero(a & b) / np.count_nonzero(a | b) > 0.9


def test_missing_weights_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CELMASK_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("CELMASK_SAM2_CHECKPOINT", raising=False)
    monkeypatch.delenv("CELMASK_DOWNLOAD", raising=False)
    for weights, expected in ((tmp_path / "sam2_t.pt", "not found"), ("sam2.1_b.pt", "weights not found")):
        with pytest.raises(CelmaskError, match=expected) as error:
            Sam2Propagator(weights, Sam2Config(device="cpu"))
        assert "\n" not in str(error.value) and "propagator.weights" in str(error.value)


def pinned(path) -> str:
    """``path`` pinned to its SHA-256, as a SAM 2 setting must be (celmask.models.weights)."""
    import hashlib

    return f"{path}@sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"


def test_unusable_weights_are_one_line(tmp_path):
    import torch

    strange = tmp_path / "my_model.pt"
    torch.save({"model": {}}, strange)
    with pytest.raises(CelmaskError, match="not named like an ultralytics SAM 2 checkpoint"):
        Sam2Propagator(pinned(strange), Sam2Config(device="cpu"))
    empty = tmp_path / "sam2_t.pt"
    torch.save({"model": {}}, empty)
    with pytest.raises(CelmaskError, match="cannot be loaded as sam2_t.pt") as error:
        Sam2Propagator(pinned(empty), Sam2Config(device="cpu"))
    assert "\n" not in str(error.value)


def test_a_checkpoint_is_loaded_and_named_by_its_checksum(sam2_tiny, tmp_path):
    import torch

    path = tmp_path / "sam2_t.pt"
    torch.save({"model": sam2_tiny.state_dict()}, path)
    loaded = Sam2Propagator(pinned(path), Sam2Config(device="cpu", imgsz=256))
    assert loaded.model_id == f"sam2:{pinned(path).rpartition('/')[2]}"  # the form of the setting
    frames, masks = two_figures(2)
    assert [m.shape for m, _ in loaded.propagate(frames, masks)] == [(2, H, W)]
    with pytest.raises(ValueError, match="multiple of 32"):
        Sam2Config(device="cpu", imgsz=100)
