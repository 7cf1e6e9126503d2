"""Real-art episodes (celmask.tasks.synth.realepisode): truth from alpha, limited animation, determinism, bad input.

Most tests use a tiny art folder drawn here with cv2 (flat-colour figures with binary
alpha, gradient backgrounds); one uses ../shared/realart and skips where it is absent.
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from celmask.flows.cli import main
from celmask.tasks.core.rle import decode_mask
from celmask.tasks.eval.masks import score_video
from celmask.tasks.synth import iter_truth_masks, load_truth, render_frames
from celmask.tasks.synth.realepisode import (
    HOLD_DRAWINGS,
    generate_art_episode,
    load_art,
    looks,
    plan_art_episode,
    pose_schedule,
)
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.sprites import paste_sprite
from celmask.tasks.synth.staging import CharacterPlan
from celmask.tasks.synth.truth import MIN_VISIBLE_PIXELS
from celmask.tasks.trainset.realart import by_split, load_backgrounds, load_cutouts

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")  # numpy 2 vs pycocotools

FPS = Fraction(24000, 1001)
W, H = 256, 144
SEED = 23
"""Its 6 s plan has several shots with two or more characters that overlap, a
character back in a later shot and a static camera on whole pixels."""
COLOURS = {"ann": (220, 60, 60), "bo": (60, 80, 220), "cy": (60, 200, 90), "dee": (230, 200, 40)}


def _figure(colour: tuple[int, int, int], pose: int) -> np.ndarray:
    """A 120x64 BGRA figure with binary alpha: body, head, and an arm raised in pose 1,
    an eye closed in pose 2 (a changed expression)."""
    img = np.zeros((120, 64, 4), np.uint8)
    bgr = (*colour[::-1], 255)
    cv2.rectangle(img, (14, 40), (49, 119), bgr, -1)
    cv2.circle(img, (32, 22), 17, bgr, -1)
    if pose == 1:
        cv2.rectangle(img, (50, 8), (60, 60), bgr, -1)
    if pose == 2:
        cv2.circle(img, (26, 20), 3, (20, 20, 20, 255), -1)
    return img


def make_art(root: Path) -> Path:
    """Four characters of one title (three poses each), a folder of two other people,
    three backgrounds of three places."""
    for name, colour in COLOURS.items():
        (root / "cutouts" / "title").mkdir(parents=True, exist_ok=True)
        for pose in range(3):
            cv2.imwrite(str(root / "cutouts" / "title" / f"{name}__{name}_{pose}.png"), _figure(colour, pose))
    (root / "cutouts" / "solo").mkdir(parents=True)
    cv2.imwrite(str(root / "cutouts" / "solo" / "stand.png"), _figure((150, 90, 200), 0))
    cv2.imwrite(str(root / "cutouts" / "solo" / "think.png"), _figure((90, 200, 200), 1))
    (root / "backgrounds" / "place").mkdir(parents=True)
    yy, xx = np.mgrid[0:240, 0:400]
    for k, stem in enumerate(("park_day", "room", "street_a")):
        bg = np.stack([(xx * 0.5 + 40 * k) % 200, yy * 0.6 + 20, np.full_like(xx, 90 + 40 * k)], -1)
        cv2.imwrite(str(root / "backgrounds" / "place" / f"{stem}.png"), bg.astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def art_dir(tmp_path_factory) -> Path:
    return make_art(tmp_path_factory.mktemp("art"))


@pytest.fixture(scope="module")
def episode(art_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("episode")
    generate_art_episode(out, art_dir, seed=SEED, duration=6.0, width=W, height=H, fps=FPS)
    return out


def _plan(art_dir: Path, seed: int = SEED, seconds: float = 6.0):
    cutouts, backgrounds = load_art(art_dir)
    return plan_art_episode(seed, cutouts, backgrounds, frame_count=round(seconds * FPS), width=W, height=H, fps=FPS)


def test_looks_group_outfits_and_tell_people_apart(art_dir):
    found = {(look.character, look.person): len(look.cutouts) for look in looks(load_cutouts(art_dir / "cutouts"))}
    assert found == {
        **{(f"title/{n}", f"title/{n}"): 3 for n in COLOURS},  # poses and expressions of one outfit
        ("solo", "solo/0"): 1,  # one folder, two people (other colours): two looks, two persons
        ("solo", "solo/1"): 1,
    }


def test_sprites_are_the_cutouts_alpha(art_dir):
    plan, art = _plan(art_dir)
    ch = next(c for s in plan.shots for c in s.characters)
    rgba = art.looks[ch.character_id].cutouts[0].rgba
    at_one = art.sprite(CharacterPlan(ch.character_id, 1.0, None, (), (0,), ((0.0, 0.0),), "stand"), 0)
    assert np.array_equal(at_one.alpha, rgba[..., 3]) and np.array_equal(at_one.mask, rgba[..., 3] >= 128)
    assert at_one.anchor == (rgba.shape[1] / 2, rgba.shape[0])  # the bottom centre stands on the anchor
    mirrored = art.sprite(CharacterPlan(ch.character_id, 1.0, None, (), (1,), ((0.0, 0.0),), "stand"), 1)
    assert np.array_equal(mirrored.alpha, rgba[:, ::-1, 3])
    opaque = rgba[..., 3] == 255
    assert np.array_equal(at_one.rgb[opaque], rgba[..., :3][opaque])  # premultiplied: opaque pixels unchanged


def test_truth_masks_are_the_alpha_as_placed(art_dir, episode):
    """Every frame's truth rows are exactly the rendered label map, and where the camera
    is a whole-pixel crop, that map is the sprites' alpha pasted back to front."""
    plan, art = _plan(art_dir)
    table = pq.read_table(episode / "masks.parquet").to_pylist()
    rows: dict[int, dict[int, np.ndarray]] = {}
    for r in table:
        rows.setdefault(r["frame_index"], {})[r["character_id"]] = decode_mask(r["mask_rle"], H, W)
    checked = occluded = 0
    for fr in render_frames(plan, art):
        shot = plan.shots[fr.shot]
        got = rows.get(fr.index, {})
        if fr.labels is None:
            assert not got
            continue
        by_slot = {slot: fr.labels == slot + 1 for slot in range(len(shot.characters))}
        want = {shot.characters[k].character_id: m for k, m in by_slot.items() if m.sum() >= MIN_VISIBLE_PIXELS}
        assert want.keys() == got.keys() and all(np.array_equal(want[c], got[c]) for c in want)
        cam = shot.camera[fr.index - shot.content_start]
        x0, y0 = cam.cx - W / 2, cam.cy - H / 2
        if cam.zoom != 1.0 or not (x0.is_integer() and y0.is_integer()):
            continue
        s = art.sets[shot.set_id]
        canvas, labels = np.zeros((s.height, s.width, 3), np.uint8), np.zeros((s.height, s.width), np.uint8)
        d = shot.drawing_at(fr.index)
        seen = np.zeros_like(labels, bool)
        for slot, ch in enumerate(shot.characters):
            sprite = art.sprite(ch, ch.pose_of_drawing[d])
            alone = np.zeros_like(labels)
            paste_sprite(canvas, alone, sprite, ch.anchor_of_drawing[d], 1)
            occluded += int((seen & (alone > 0)).any())
            seen |= alone > 0
            paste_sprite(canvas, labels, sprite, ch.anchor_of_drawing[d], slot + 1)
        view = labels[int(y0) : int(y0) + H, int(x0) : int(x0) + W]
        assert np.array_equal(view, fr.labels)
        checked += 1
    assert checked > 40 and occluded > 0
    truth = load_truth(episode)  # the usual truth: the eval code scores it against itself as perfect
    score = score_video(
        iter_truth_masks(episode), iter_truth_masks(episode), truth.holds, [(s.start, s.end) for s in truth.shots]
    )
    assert score.jf == pytest.approx(1.0) and score.fp_tracks == 0


def test_characters_keep_their_identity_across_shots(episode):
    truth = load_truth(episode)
    shots_of: dict[int, set[int]] = {}
    for s in truth.shots:
        for t in s.tracks:
            shots_of.setdefault(t.character_id, set()).add(s.index)
        assert len({t.character_id for t in s.tracks}) == len(s.tracks)  # one person is on screen once
    assert max(len(v) for v in shots_of.values()) >= 2
    assert (episode / "art.json").is_file()


def test_limited_animation_holds_drawings_and_changes_in_bursts(art_dir, episode):
    seq = pose_schedule(child_rng(0, "test"), 5, 2, 300)
    runs = [len(list(g)) for _, g in itertools.groupby(seq)]
    assert seq[0] == 2 and len(set(seq)) >= 2
    assert all(n == 1 or n >= HOLD_DRAWINGS[0] for n in runs[:-1])  # held, or one drawing inside a burst
    assert sum(n == 1 for n in runs) >= 4 and sum(n >= HOLD_DRAWINGS[0] for n in runs) >= 3
    assert pose_schedule(child_rng(0, "test"), 1, 0, 50) == [0] * 50  # one cut-out: held throughout

    plan, _ = _plan(art_dir)
    changes = 0
    for s in plan.shots:
        starts = [*s.drawings, s.content_end - s.content_start]
        assert all(b - a >= 2 for a, b in zip(starts[:-2], starts[1:-1]))  # on 2s or 3s (the last may be cut short)
        for ch in s.characters:
            changes += sum(a // 2 != b // 2 for a, b in zip(ch.pose_of_drawing, ch.pose_of_drawing[1:]))
    assert changes > 0  # other cut-outs of the character are its other drawings
    truth = load_truth(episode)
    held = sum(b - a for a, b in truth.holds)
    assert held > 0.3 * truth.frame_count


def test_same_seed_same_bytes(art_dir, tmp_path):
    for name in ("a", "b"):
        generate_art_episode(tmp_path / name, art_dir, seed=7, duration=2.0, width=W, height=H)
    for f in ("episode.mp4", "masks.parquet", "truth.json", "art.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    generate_art_episode(tmp_path / "c", art_dir, seed=8, duration=2.0, width=W, height=H)
    assert (tmp_path / "c" / "masks.parquet").read_bytes() != (tmp_path / "a" / "masks.parquet").read_bytes()


@pytest.mark.parametrize("broken", ["no-cutouts", "no-backgrounds", "no-folder", "empty-split"])
def test_bad_art_is_a_one_line_error(tmp_path, capsys, broken):
    bad = tmp_path / "art"
    if broken != "no-folder":
        make_art(bad)
    if broken == "no-cutouts":
        (bad / "cutouts").rename(tmp_path / "elsewhere")
    if broken == "no-backgrounds":
        (bad / "backgrounds").rename(tmp_path / "elsewhere")
    if broken == "empty-split":  # one place left: it is in the train split, val has no set
        for stem in ("room", "street_a"):
            (bad / "backgrounds" / "place" / f"{stem}.png").unlink()
    extra = ["--art-split", "val"] if broken == "empty-split" else []
    rc = main(["synth", str(tmp_path / "out"), "--art", str(bad), "--duration", "1", "--size", "128x72", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("celmask: error: ") and err.count("\n") == 1, err
    assert {
        "no-cutouts": "no cutouts/ folder",
        "no-backgrounds": "no backgrounds/ folder",
        "no-folder": "art directory not found",
        "empty-split": "split of seed 0 has no",
    }[broken] in err
    assert not (tmp_path / "out" / "truth.json").exists()


def test_art_split_needs_art(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "out"), "--art-split", "test"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow  # reads the 538 pictures twice: ~25 s on 2 cores
@pytest.mark.realart
def test_a_test_split_episode_of_the_shared_art(shared_dir, tmp_path):
    art = shared_dir / "realart"
    if not (art / "cutouts").is_dir():
        pytest.skip(f"{art} not present")
    generate_art_episode(tmp_path, art, seed=1, duration=3.0, width=320, height=180, split="test", split_seed=0)
    held_out = {c.character for c in by_split(load_cutouts(art / "cutouts"), lambda c: c.character, 0)["test"]}
    held_sets = {b.name for b in by_split(load_backgrounds(art / "backgrounds"), lambda b: b.group, 0)["test"]}
    record = json.loads((tmp_path / "art.json").read_text())
    assert record["source"]["split"] == "test" and {c["character"] for c in record["cast"]} <= held_out
    assert {s["background"].split("/", 1)[1] for s in record["sets"]} <= held_sets
    truth = load_truth(tmp_path)
    assert sum(s.n_characters for s in truth.shots) > 0
    assert any(len(ids) for _, ids, _ in iter_truth_masks(tmp_path))
