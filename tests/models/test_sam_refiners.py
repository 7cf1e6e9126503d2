"""SAM refiners with a tiny random-weights SAM built in-process, on frames of a generated
episode: the interface contract, the refinement guard, one image embedding per frame,
SAM's mask-prompt convention, seed 004's voting, and loading checkpoints."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from celmask.models.refiners.sam import (
    PromptConfig,
    SamRefiner,
    VoteConfig,
    VoteRefiner,
    accept_proposals,
    load_sam,
    mask_prompts,
    vote_masks,
)
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import accept_refinement
from celmask.tasks.synth import generate_episode, iter_truth_masks
from celmask.tasks.video import iter_frames
from tests.support.tiny_models import tiny_sam

FAST_VOTES = VoteConfig(points_per_side=4, crop_n_layers=0, max_side=320)
"""Few points, no crops, a half-size frame: seconds on two busy cores."""


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[tuple[np.ndarray, Instances]]:
    """Three frames of a generated episode with their true instances (2 and 3 characters)."""
    out = tmp_path_factory.mktemp("sam") / "ep"
    generate_episode(out, seed=11, duration=2.0)
    wanted = (0, 20, 40)
    images = {f.index: f.image for f in iter_frames(out / "episode.mp4", end=41) if f.index in wanted}
    result = []
    for index, track_ids, masks in iter_truth_masks(out, 0, 41):
        if index in wanted:
            inst = Instances.from_masks(
                masks,
                score=np.linspace(0.9, 0.5, len(masks)),
                track_id=track_ids,
                data={"source": np.array(["detected"] * len(masks))},
            )
            result.append((images[index], inst))
    assert [len(inst) for _, inst in result] == [2, 3, 3]
    return result


def counted_encoder(sam) -> list[int]:
    """Count the image encoder's forward calls (one per image embedding)."""
    calls = []
    forward = sam.image_encoder.forward

    def counting(x):
        calls.append(x.shape[0])
        return forward(x)

    sam.image_encoder.forward = counting
    return calls


def check_contract(inputs: list[Instances], outputs: list[Instances]) -> None:
    assert len(outputs) == len(inputs)
    for before, after in zip(inputs, outputs):
        assert len(after) == len(before) and after.size == before.size and after.mask.dtype == bool
        for name in ("score", "class_id", "track_id"):
            assert np.array_equal(getattr(after, name), getattr(before, name))
        assert np.array_equal(after.data["source"], before.data["source"])
        refined = after.data["refined"]
        assert refined.dtype == bool and refined.shape == (len(before),)
        assert np.array_equal(after.mask[~refined], before.mask[~refined])
        assert np.array_equal(after.xyxy[~refined], before.xyxy[~refined])


def test_prompted_refiner_keeps_rows_and_rejects_what_random_sam_says(frames):
    sam = tiny_sam(seed=0)
    calls = counted_encoder(sam)
    refiner = SamRefiner(
        sam, device="cpu", config=PromptConfig(batch=2)
    )  # 3 instances: two decoder batches, one embedding
    images = [image for image, _ in frames]
    inputs = [inst for _, inst in frames]
    outputs = refiner.refine(images, inputs)
    check_contract(inputs, outputs)
    assert calls == [1, 1, 1]  # one embedding per frame, shared by all its instances
    assert refiner.model_id == "sam-prompt:random-init"
    rejected = 0
    for image, inst, out in zip(images, inputs, outputs):
        proposals = refiner.propose(image, inst)
        assert proposals.shape == inst.mask.shape
        for row, (before, after) in enumerate(zip(inst.mask, proposals)):
            if not accept_refinement(before, after):
                assert not np.array_equal(before, after) and np.array_equal(out.mask[row], before)
                assert not out.data["refined"][row]
                rejected += 1
    assert rejected == sum(len(inst) for inst in inputs)  # random weights: every answer disagrees, none gets in


def test_empty_instances_cost_no_embedding(frames):
    sam = tiny_sam(seed=0)
    calls = counted_encoder(sam)
    image = frames[0][0]
    empty = Instances.empty(*image.shape[:2])
    for refiner in (SamRefiner(sam, device="cpu"), VoteRefiner(sam, device="cpu", config=FAST_VOTES)):
        [out] = refiner.refine([image], [empty])
        assert len(out) == 0 and out.data["refined"].shape == (0,) and out.size == image.shape[:2]
    assert calls == []
    with pytest.raises(ValueError, match="one Instances per image"):
        SamRefiner(sam, device="cpu").refine([image], [])


def test_vote_refiner_runs_with_tiny_sam(frames):
    sam = tiny_sam(seed=1)
    refiner = VoteRefiner(sam, device="cpu", config=FAST_VOTES)
    images = [image for image, _ in frames[:2]]
    inputs = [inst for _, inst in frames[:2]]
    outputs = refiner.refine(images, inputs)
    check_contract(inputs, outputs)
    assert refiner.model_id == "sam-vote:random-init"
    segments = refiner.segments(images[0])
    assert all(s.shape == images[0].shape[:2] and s.dtype == bool for s in segments)  # back at frame size


def test_accept_proposals_replaces_only_agreeing_rows():
    mask = np.zeros((3, 40, 60), bool)
    mask[0, 10:30, 10:30] = True
    mask[1, 5:25, 35:55] = True  # row 2 stays empty
    inst = Instances.from_masks(mask, score=np.array([0.9, 0.8, 0.7]))
    proposals = np.zeros_like(mask)
    proposals[0, 10:30, 11:31] = True  # shifted by a pixel: agrees
    proposals[1] = True  # the whole frame: swallows the background
    proposals[2, :5, :5] = True  # an empty input is never replaced
    out = accept_proposals(inst, proposals)
    assert out.data["refined"].tolist() == [True, False, False]
    assert np.array_equal(out.mask[0], proposals[0]) and out.xyxy[0].tolist() == [11, 10, 31, 30]
    assert np.array_equal(out.mask[1:], mask[1:]) and np.array_equal(out.xyxy[1:], inst.xyxy[1:])


def test_mask_prompts_follow_sams_low_res_convention():
    mask = np.zeros((1, 360, 640), bool)
    mask[0, :, :320] = True  # the left half of a 16:9 frame
    logits = mask_prompts(mask, 1024, (256, 256))
    assert logits.shape == (1, 1, 256, 256) and logits.dtype == np.float32
    # 640x360 -> 1024x576 -> 256x144 of the 256x256 square; the rest is padding (outside)
    assert logits[0, 0, 10, 10] > 0 and logits[0, 0, 10, 200] < 0 and logits[0, 0, 200, 10] < 0
    assert (logits[0, 0, 144:] < 0).all()
    # SAM's own post-processing of these logits gives the mask back
    sam = tiny_sam()
    torch_logits = torch.as_tensor(mask_prompts(mask, 256, sam.prompt_encoder.mask_input_size))
    back = sam.postprocess_masks(torch_logits, (144, 256), (360, 640))[0, 0].numpy() > sam.mask_threshold
    assert (back == mask[0]).mean() > 0.99


def test_vote_masks_follow_seed_004():
    config = VoteConfig(erode_radius=1.0, erode_iterations=1, dilate_iterations=0)  # 1-px erosion at 640 px
    masks = np.zeros((2, 60, 640), bool)
    masks[0, 10:50, 100:140] = True
    masks[1, 10:50, 145:185] = True
    hair = np.zeros((60, 640), bool)
    hair[5:20, 98:142] = True  # half inside character 0, reaching past its mask: voted in, whole
    floor = np.zeros((60, 640), bool)
    floor[40:60, :] = True  # touches both characters, little of it inside either: not voted
    shared = np.zeros((60, 640), bool)
    shared[25:35, 120:160] = True  # 47% inside character 0, 35% inside 1: only character 0 gets it
    voted = vote_masks(masks, [hair, floor, shared], config)
    assert voted[0][hair].all() and voted[0][shared].all() and not voted[1][shared].any()
    assert not voted[0][floor].any() and not voted[1][floor].any()
    eroded = np.zeros((60, 640), bool)
    eroded[11:49, 146:184] = True  # character 1 eroded by a pixel
    assert np.array_equal(voted[1], eroded & ~floor & ~shared)  # no segment of its own: its unlabelled pixels
    assert vote_masks(np.zeros((0, 60, 640), bool), [hair], config).shape == (0, 60, 640)


# -- loading checkpoints ---------------------------------------------------------------


@pytest.fixture
def no_weights_env(monkeypatch, tmp_path):
    for name in ("CELMASK_WEIGHTS_DIR", "CELMASK_DOWNLOAD", "CELMASK_SAM_CHECKPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_from_checkpoint_loads_the_weights(tmp_path, monkeypatch, no_weights_env):
    monkeypatch.setitem(sam_model_registry, "tiny", lambda checkpoint=None: tiny_sam(seed=0))
    saved = tiny_sam(seed=5)
    path = tmp_path / "tiny.pth"
    torch.save(saved.state_dict(), path)
    refiner = SamRefiner.from_checkpoint("tiny", path, device="cpu", config=PromptConfig(batch=4))
    assert refiner.config.batch == 4
    for name, value in refiner.sam.state_dict().items():
        assert torch.equal(value, saved.state_dict()[name]), name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert refiner.model_id == f"sam-prompt:tiny:tiny.pth@sha256:{digest}"
    monkeypatch.setenv("CELMASK_SAM_CHECKPOINT", str(path))  # no checkpoint given: the variable names it
    vote = VoteRefiner.from_checkpoint("tiny", device="cpu", config=FAST_VOTES)
    assert vote.model_id == f"sam-vote:tiny:tiny.pth@sha256:{digest}"


def test_missing_sam_weights_say_where_to_get_them(tmp_path, no_weights_env):
    with pytest.raises(CelmaskError) as error:
        load_sam("vit_b", cache_dir=tmp_path / "cache")
    text = str(error.value)
    assert "\n" not in text and text.startswith("sam_vit_b_01ec64.pth: weights not found")
    assert (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in text and "refiner.checkpoint" in text
    )


def test_wrong_or_broken_checkpoints_are_one_line_errors(tmp_path, no_weights_env):
    tiny = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), tiny)
    vit_l_like = tmp_path / "large.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 1, 1, 1024)}, vit_l_like)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    text = tmp_path / "text.pth"
    text.write_text("hello")
    cases = [
        ("vit_b", tiny, "is not a SAM vit_b checkpoint (image encoder width 32, not 768)"),
        ("vit_b", vit_l_like, "is a SAM vit_l checkpoint, not vit_b; set refiner.model to vit_l"),
        ("vit_h", listing, "is not a Segment Anything checkpoint"),
        ("vit_h", text, "is not a PyTorch checkpoint"),
        ("vit_x", tiny, "vit_x: is not a SAM model type"),
    ]
    for model_type, path, message in cases:
        with pytest.raises(CelmaskError) as error:
            load_sam(model_type, path, cache_dir=tmp_path / "cache")
        assert message in str(error.value) and "\n" not in str(error.value)
