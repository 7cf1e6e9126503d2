"""Real art for the detector's training data: checked on load, split by character."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.trainset import composites as cp
from celmask.tasks.trainset import realart as ra

W, H = cp.IMAGE_SIZE


def _bust(colour: int, alpha: bool = True, size: tuple[int, int] = (200, 160)) -> np.ndarray:
    h, w = size
    img = np.zeros((h, w, 4), np.uint8)
    cv2.ellipse(img, (w // 2, h // 3), (w // 4, h // 4), 0, 0, 360, (40 + colour, 90, 200, 255), -1)
    cv2.rectangle(img, (w // 6, h // 2), (5 * w // 6, h - 1), (200, 60 + colour, 90, 255), -1)
    return img if alpha else img[..., :3]


def _art(root: Path) -> tuple[Path, Path]:
    """A title with five characters (one in two outfits) and two one-character sources;
    painted sets of four places."""
    cuts, sets = root / "cutouts", root / "backgrounds"
    names = {
        "title": [
            "ann__ann_smile",
            "ann__ann_sad",
            "anncas__anncas_smile",
            "bo__bo_a",
            "bo__bo_b",
            "cy__cy_a",
            "dee__dee_a",
            "eve__eve_a",
        ],
        "solo": ["stand", "think"],
        "pair": ["x_1", "x_2"],
    }
    for source, stems in names.items():
        (cuts / source).mkdir(parents=True)
        for i, stem in enumerate(stems):
            cv2.imwrite(str(cuts / source / f"{stem}.png"), _bust(20 * i))
    rng = np.random.default_rng(0)
    for source, stems in {
        "title": ["park_day", "park_night", "room", "street_a", "street_b"],
        "other": ["hall"],
    }.items():
        (sets / source).mkdir(parents=True)
        for stem in stems:
            cv2.imwrite(str(sets / source / f"{stem}.jpg"), rng.integers(0, 255, (300, 480, 3), np.uint8))
    return cuts, sets


def test_characters_come_from_names_and_outfits_merge(tmp_path):
    cuts, _ = _art(tmp_path)
    loaded = ra.load_cutouts(cuts)
    chars = {c.name: c.character for c in loaded}
    assert chars["ann__ann_smile.png"] == chars["anncas__anncas_smile.png"] == "title/ann"  # an outfit of ann
    assert chars["bo__bo_a.png"] == chars["bo__bo_b.png"] == "title/bo"
    assert chars["stand.png"] == chars["think.png"] == "solo"  # no names: the folder is one character
    assert {c.source for c in loaded} == {"title", "solo", "pair"}
    for c in loaded:  # cropped to the alpha, straight RGBA
        assert c.rgba.shape[2] == 4 and (c.rgba[0, :, 3] >= 128).any() and (c.rgba[-1, :, 3] >= 128).any()


def test_split_is_by_character_deterministic_and_covers_every_split(tmp_path):
    cuts, sets = _art(tmp_path)
    loaded = ra.load_cutouts(cuts)
    split = ra.by_split(loaded, lambda c: c.character, seed=0)
    owners: dict[str, set[str]] = {}
    for name, items in split.items():
        for c in items:
            owners.setdefault(c.character, set()).add(name)
    assert all(len(v) == 1 for v in owners.values()), owners  # no character in two splits
    assert sum(map(len, split.values())) == len(loaded)
    again = ra.by_split(ra.load_cutouts(cuts), lambda c: c.character, seed=0)
    assert {k: [c.name for c in v] for k, v in split.items()} == {k: [c.name for c in v] for k, v in again.items()}
    assert all(split[k] for k in ("train", "val", "test"))
    backgrounds = ra.by_split(ra.load_backgrounds(sets), lambda b: b.group, seed=0)
    groups = {k: {b.group for b in v} for k, v in backgrounds.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert "title/park" in set().union(*groups.values())  # park_day and park_night: one place


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: cv2.imwrite(str(d / "flat.png"), _bust(0, alpha=False)), "flat.png: cut-out has no alpha channel"),
        (lambda d: cv2.imwrite(str(d / "solid.png"), np.full((80, 80, 4), 255, np.uint8)), "fully opaque"),
        (lambda d: cv2.imwrite(str(d / "tiny.png"), _bust(0, size=(24, 20))), "too small to use"),
        (lambda d: (d / "broken.png").write_bytes(b"\x89PNG not really"), "broken.png: unreadable image"),
        (lambda d: (d / "notes.txt").write_text("no images here\n"), "no png/webp images in the cut-out directory"),
    ],
)
def test_bad_cutouts_are_one_line_errors_naming_the_file(tmp_path, make, message):
    folder = tmp_path / "cast"
    folder.mkdir()
    make(folder)
    with pytest.raises(CelmaskError, match=message) as err:
        ra.load_cutouts(folder)
    assert "\n" not in str(err.value)


def test_a_background_too_small_is_refused(tmp_path):
    (tmp_path / "sets").mkdir()
    cv2.imwrite(str(tmp_path / "sets" / "thumb.jpg"), np.zeros((90, 120, 3), np.uint8))
    with pytest.raises(CelmaskError, match="thumb.jpg: background too small to use"):
        ra.load_backgrounds(tmp_path / "sets")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if (
            p.is_file() and p.suffix in (".jpg", ".txt", ".jsonl") and p.parent.name != "subsets"
        ):  # those list absolute paths
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _posed(pose: int, face: int) -> np.ndarray:
    """A figure whose silhouette is its pose (arms, legs, width) and whose face colour is
    its expression: the same pose with another face must group with it."""
    img = np.zeros((240, 240, 4), np.uint8)
    w, half = img.shape[1], 30 + 12 * pose  # a wider stance each pose
    cv2.ellipse(img, (w // 2, 40), (28, 32), 0, 0, 360, (200, 180, 40 * face, 255), -1)
    cv2.rectangle(img, (w // 2 - half, 72), (w // 2 + half, 239), (90, 60, 200, 255), -1)
    if pose % 2:  # an arm held out
        cv2.rectangle(img, (0, 90 + 10 * pose), (w // 2, 110 + 10 * pose), (90, 60, 200, 255), -1)
    return img


def _cast(root: Path, poses: dict[str, int], faces: int = 2) -> Path:
    """A studio's cast: one folder per character, ``poses[name]`` poses x ``faces`` expressions."""
    for name, n in poses.items():
        (root / name).mkdir(parents=True)
        for pose in range(n):
            for face in range(faces):
                cv2.imwrite(str(root / name / f"{name}_{pose}_{face}.png"), _posed(pose, face))
    return root


def test_poses_come_from_the_silhouette_not_the_face(tmp_path):
    loaded = ra.load_cutouts(_cast(tmp_path / "cast", {"ann": 4, "bo": 1}, faces=3))
    for c in loaded:
        stem = Path(c.name).stem
        assert c.character == stem.split("_")[0]  # the folder names the character
        assert c.pose == int(stem.split("_")[1])  # 3 faces of one pose: one pose; poses in order of first sight
    assert {c.pose for c in loaded if c.character == "bo"} == {0}


def test_a_split_by_pose_trains_every_character_and_never_shares_a_pose(tmp_path):
    cast = _cast(tmp_path / "cast", {"ann": 5, "bo": 3, "cy": 2, "dee": 1})
    loaded = ra.load_cutouts(cast)
    split = ra.by_pose(loaded, seed=0)
    owners: dict[tuple[str, int], set[str]] = {}
    for name, items in split.items():
        for c in items:
            owners.setdefault((c.character, c.pose), set()).add(name)
    assert all(len(v) == 1 for v in owners.values()), owners  # a pose's faces stay together
    assert {c.character for c in split["train"]} == {"ann", "bo", "cy", "dee"}  # every character trained on
    assert {c.character for c in split["test"]} == {"ann", "bo"}  # three poses or more: one held out for test
    assert {c.character for c in split["val"]} == {"ann", "bo", "cy"}  # two poses: the second is val
    assert sum(map(len, split.values())) == len(loaded)
    again = ra.by_pose(ra.load_cutouts(cast), seed=0)
    assert {k: [c.name for c in v] for k, v in split.items()} == {k: [c.name for c in v] for k, v in again.items()}
    no_test = ra.by_pose(loaded, seed=0, shares={"train": 0.7, "val": 0.12})
    assert not no_test["test"] and {c.character for c in no_test["val"]} == {"ann", "bo", "cy"}


def test_a_dataset_split_by_pose_has_the_cast_in_every_split(tmp_path):
    cast = _cast(tmp_path / "cast", {"ann": 4, "bo": 3})
    _, sets = _art(tmp_path)
    args = dict(train_images=8, val_images=4, test_images=4, seed=1, cutouts=cast, backgrounds=sets, split_by="pose")
    root = cp.build_dataset(tmp_path / "a", **args).parent
    summary = json.loads((root / "dataset.json").read_text())
    assert summary["split_by"] == "pose"
    assert all(summary["splits"][k]["characters"] == ["ann", "bo"] for k in ("train", "val", "test"))
    pose_of = {c.name: (c.character, c.pose) for c in ra.load_cutouts(cast)}
    seen = {}
    for split in ("train", "val", "test"):
        for r in (json.loads(x) for x in (root / f"{split}.jsonl").read_text().splitlines()):
            for fg in r.get("foregrounds", []):
                if fg.startswith("cutout:"):
                    seen.setdefault(pose_of[fg.split("/", 1)[1]], set()).add(split)
    assert seen and all(len(v) == 1 for v in seen.values()), seen  # no pose in two splits
    with pytest.raises(CelmaskError, match="split_by: must be one of character, pose"):
        cp.build_dataset(tmp_path / "b", **{**args, "split_by": "file"})


def test_dataset_with_real_art_keeps_test_characters_out_of_training(tmp_path):
    cuts, sets = _art(tmp_path)
    args = dict(train_images=14, val_images=5, test_images=6, seed=3, cutouts=cuts, backgrounds=sets)
    data = cp.build_dataset(tmp_path / "a", **args)
    root = data.parent
    summary = json.loads((root / "dataset.json").read_text())
    splits = summary["splits"]
    assert not set(splits["test"]["characters"]) & set(splits["train"]["characters"])
    assert not set(splits["val"]["characters"]) & set(splits["train"]["characters"])
    assert splits["train"]["kinds"]["empty"] >= 1  # hard negatives from the real sets
    records = [json.loads(x) for x in (root / "test.jsonl").read_text().splitlines()]
    test_chars = {c.name: c.character for c in ra.load_cutouts(cuts)}
    for r in records:
        for fg in r.get("foregrounds", []):
            assert fg.startswith("cutout:"), fg  # every test foreground is real ...
            assert test_chars[fg.split("/", 1)[1]] in splits["test"]["characters"]  # ... and a held-out character
    for r in (json.loads(x) for x in (root / "train.jsonl").read_text().splitlines()):
        assert not any(
            fg.startswith("cutout:") and test_chars[fg.split("/", 1)[1]] in splits["test"]["characters"]
            for fg in r.get("foregrounds", [])
        )
    # per-source scoring sets beside data.yaml, each an image list of its split
    subsets = sorted(p.name for p in root.glob("data-test-*.yaml"))
    assert subsets and all("empty" not in s for s in subsets)
    assert cp.build_dataset(tmp_path / "b", **args).parent != root
    assert _digest(root) != "" and _digest(root) == _digest(tmp_path / "b")  # same seed, same bytes


def test_a_real_close_up_keeps_the_head_in_frame(tmp_path):
    cuts, _ = _art(tmp_path)
    art = cp.Art(tuple(ra.load_cutouts(cuts)), (), 1.0)
    tops = []
    for i in range(30):
        rng = child_rng(9, "closeup", i)
        p = cp._real(rng, art.pick_cutout(rng), "closeup", (W, H))
        labels = np.zeros((H, W), np.uint8)
        canvas = np.zeros((H, W, 3), np.uint8)
        cp._place(canvas, labels, p.fg, p.at, 1, angle=p.angle, flip=p.flip)
        ys = np.nonzero(labels.any(1))[0]
        tops.append(ys.min())
        assert ys.size and ys.max() >= 0.94 * H  # reaches the bottom edge (a tilt may lift a corner)
    assert np.median(tops) < 0.2 * H


@pytest.mark.slow
@pytest.mark.realart
def test_the_shared_real_art_loads_and_splits_by_character(shared_dir):
    cuts, sets = shared_dir / "realart" / "cutouts", shared_dir / "realart" / "backgrounds"
    if not cuts.is_dir():
        pytest.skip(f"{cuts} not present")
    loaded = ra.load_cutouts(cuts)
    assert len(loaded) == 407
    split = ra.by_split(loaded, lambda c: c.character, seed=0)
    chars = {k: {c.character for c in v} for k, v in split.items()}
    assert not (chars["train"] & chars["test"]) and not (chars["train"] & chars["val"])
    poses = {
        name: len({c.pose for c in loaded if c.character == f"katawa-shoujo/{name}"})
        for name in ("emi", "lilly", "yuuko")
    }
    assert poses == {"emi": 6, "lilly": 4, "yuuko": 3}  # basic / excited / sad, casual, casual up, wheelchair; ...
    assert len(ra.load_backgrounds(sets)) == 131
