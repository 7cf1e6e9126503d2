"""The detector's training data: composites and episode frames written as YOLO-seg."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth import plan_timeline, render_frames
from celmask.tasks.trainset import composites as cp

W, H = cp.IMAGE_SIZE


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.suffix in (".jpg", ".txt", ".jsonl", ".png")
        and p.parent.name != "subsets"  # absolute paths
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small dataset with label maps kept: 12 train (5 one, 4 multi, 3 episode), 4 val, 3 test."""
    root = tmp_path_factory.mktemp("composites") / "ds"
    cp.build_dataset(
        root, train_images=12, val_images=4, test_images=3, seed=5, label_maps=True, cutouts="none", backgrounds="none"
    )
    return root


def _records(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def test_layout_and_data_yaml(dataset):
    text = (dataset / "data.yaml").read_text()
    for split in ("train", "val", "test"):
        assert f"{split}: {dataset / 'images' / split}" in text  # absolute paths
        images = sorted(p.stem for p in (dataset / "images" / split).glob("*.jpg"))
        labels = sorted(p.stem for p in (dataset / "labels" / split).glob("*.txt"))
        assert images == labels
    assert "0: character" in text
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["splits"]["train"]["kinds"] == {"one": 5, "multi": 4, "empty": 0, "episode": 3}
    assert summary["splits"]["test"]["kinds"] == {"one": 0, "multi": 0, "empty": 0, "episode": 3}
    img = cv2.imread(str(next((dataset / "images" / "train").glob("*.jpg"))))
    assert img.shape == (H, W, 3)


def test_polygons_rasterise_back_to_the_visible_masks(dataset):
    checked = 0
    for split in ("train", "val", "test"):
        for rec in _records(dataset, split):
            stem = Path(rec["image"]).stem
            labels = cv2.imread(str(dataset / "labelmaps" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            masks = cp.read_yolo_masks(dataset / "labels" / split / f"{stem}.txt", (W, H))
            assert len(masks) == len(rec["instances"])  # one line per instance
            for k, mask in zip(rec["instances"], masks):
                truth = labels == k
                assert truth.sum() >= cp.MIN_INSTANCE_FRACTION * W * H
                if truth.sum() >= 0.01 * W * H:
                    assert _iou(mask, truth) > 0.9, (split, stem, k)
                    checked += 1
            for k in set(np.unique(labels)) - {0} - set(rec["instances"]):
                assert (labels == k).sum() < cp.MIN_INSTANCE_FRACTION * W * H  # only tiny slivers go unlabelled
    assert checked >= 15


def test_an_instance_cut_in_pieces_is_one_line_with_its_holes():
    labels = np.zeros((H, W), np.uint8)
    cv2.ellipse(labels, (200, 180), (120, 90), 0, 0, 360, 1, -1)
    cv2.circle(labels, (230, 170), 25, 0, -1)  # a hole (arm against the body)
    labels[:, 180:200] = 2  # a character in front cuts it in two
    cv2.circle(labels, (520, 80), 30, 1, -1)  # a third piece far away
    polys = cp.instance_polygons(labels)
    assert [k for k, _ in polys] == [1, 2]
    lines = cp.yolo_lines([p for _, p in polys], (W, H))
    assert len(lines) == 2 and all(line.startswith("0 ") for line in lines)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.round(polys[0][1]).astype(np.int32).reshape(-1, 1, 2)], 1)
    assert _iou(mask.astype(bool), labels == 1) > 0.97
    assert not mask[170, 230]  # the hole stays a hole


def test_small_instances_get_no_label():
    labels = np.zeros((H, W), np.uint8)
    labels[10:20, 10:20] = 1  # 100 px < 0.1% of 640x360
    labels[100:200, 100:150] = 2
    assert [k for k, _ in cp.instance_polygons(labels)] == [2]


def test_split_counts_follow_the_mix():
    assert cp.split_counts(600) == {"one": 240, "multi": 210, "empty": 0, "episode": 150}
    assert sum(cp.split_counts(7).values()) == 7
    assert cp.split_counts(10, {"one": 1.0}) == {"one": 10, "multi": 0, "empty": 0, "episode": 0}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    art = {"cutouts": "none", "backgrounds": "none"}
    a = cp.build_dataset(tmp_path / "a", train_images=4, val_images=2, seed=11, **art).parent
    b = cp.build_dataset(tmp_path / "b", train_images=4, val_images=2, seed=11, **art).parent
    c = cp.build_dataset(tmp_path / "c", train_images=4, val_images=2, seed=12, **art).parent
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    assert not set(da.values()) & set(dc.values()) - {hashlib.sha256(b"").hexdigest()}


def test_splits_never_share_seeds(dataset):
    summary = json.loads((dataset / "dataset.json").read_text())["splits"]
    seeds = {s: set(v["episode_seeds"]) for s, v in summary.items()}
    assert all(seeds.values())
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"] and not seeds["val"] & seeds["test"]
    assert len({v["seed"] for v in summary.values()}) == 3
    assert min(min(s) for s in seeds.values()) >= 100_000_000  # far from the seeds tests and demos use
    # the ranges of all allowed seeds stay apart
    top_train = cp.split_seed("train", cp.MAX_SEED) + cp.MAX_EPISODES_PER_SPLIT
    assert top_train <= cp.split_seed("val", 0)
    assert cp.split_seed("val", cp.MAX_SEED) + cp.MAX_EPISODES_PER_SPLIT <= cp.split_seed("test", 0)
    with pytest.raises(CelmaskError):
        cp.split_seed("train", cp.MAX_SEED + 1)
    train_images = {hashlib.sha256(p.read_bytes()).digest() for p in (dataset / "images" / "train").glob("*.jpg")}
    val_images = {hashlib.sha256(p.read_bytes()).digest() for p in (dataset / "images" / "val").glob("*.jpg")}
    assert not train_images & val_images


def test_episode_frames_skip_holds_flashes_and_blends():
    seed = 300_000_777
    frames = list(cp.episode_frames(seed, 6))
    assert len(frames) == 6
    taken = [c.info["frame"] for c in frames]
    assert len(set(taken)) == 6 and all(c.info["episode_seed"] == seed for c in frames)
    n = round(Fraction(cp.EPISODE_SECONDS) * cp.EPISODE_FPS)
    plan = plan_timeline(seed, frame_count=n, width=W, height=H, fps=cp.EPISODE_FPS)
    by_index = {c.info["frame"]: c for c in frames}
    for fr in render_frames(plan):
        if fr.index in by_index:
            assert not fr.same_as_previous and fr.labels is not None
            assert np.array_equal(by_index[fr.index].labels, fr.labels)
            assert np.array_equal(by_index[fr.index].rgb, fr.rgb)
        if fr.index >= max(taken):
            break


def test_missing_real_art_is_skipped_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(cp, "DEFAULT_CUTOUTS", tmp_path / "absent")
    monkeypatch.setattr(cp, "DEFAULT_BACKGROUNDS", tmp_path / "absent-too")
    assert cp.resolve_art(None, cp.DEFAULT_CUTOUTS) is None
    assert cp.resolve_art("none", cp.DEFAULT_CUTOUTS) is None
    with pytest.raises(CelmaskError, match="not found"):
        cp.resolve_art(tmp_path / "absent", cp.DEFAULT_CUTOUTS)
    root = tmp_path / "ds"
    cp.build_dataset(root, train_images=3, val_images=1, seed=0, mix={"one": 1, "multi": 2})
    summary = json.loads((root / "dataset.json").read_text())
    assert summary["cutouts"] == {"dir": None, "files": {}}
    assert summary["backgrounds"] == {"dir": None, "files": {}}
    assert summary["splits"]["train"]["cutouts_used"] == {}
