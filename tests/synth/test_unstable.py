"""Unstable detections made from a generated episode's truth (celmask.tasks.synth.unstable):
deterministic, readable by FileDetector, constant on held drawings, as hard as the
level says."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from celmask.models.detectors.yolo import FileDetector
from celmask.tasks.eval.masks import region_j
from celmask.tasks.synth import decode_mask, generate_episode, iter_truth_masks, load_truth
from celmask.tasks.synth.unstable import UnstableConfig, read_unstable_summary, write_unstable_detections
from celmask.tasks.video import Frame

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")  # numpy 2 vs pycocotools


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("unstable") / "ep"
    generate_episode(out, seed=11, duration=3.0)
    return out


@pytest.fixture(scope="module")
def detections(episode):
    return write_unstable_detections(episode, episode.parent / "unstable.parquet", seed=5)


def test_same_seed_same_bytes(episode, detections, tmp_path):
    again = write_unstable_detections(episode, tmp_path / "again.parquet", seed=5)
    assert again.read_bytes() == detections.read_bytes()
    other = write_unstable_detections(episode, tmp_path / "other.parquet", seed=6)
    assert other.read_bytes() != detections.read_bytes()


def test_file_detector_reads_them(episode, detections):
    truth = load_truth(episode)
    table = pq.read_table(detections).to_pydict()
    frames = [Frame(i, 0.0, np.zeros((truth.height, truth.width, 3), np.uint8)) for i in range(truth.frame_count)]
    out = FileDetector(detections).detect(frames)
    rows = np.array(table["frame_index"])
    for f, inst in zip(frames, out):
        picked = np.flatnonzero(rows == f.index)
        assert len(inst) == len(picked)
        expected = sorted(
            (table["score"][i], int(decode_mask(table["mask_rle"][i], truth.height, truth.width).sum())) for i in picked
        )
        got = sorted(zip(inst.score.tolist(), inst.area.tolist()))
        assert got == expected


def test_held_drawings_repeat_and_new_drawings_vary(episode, detections):
    truth = load_truth(episode)
    table = pq.read_table(detections).to_pydict()
    by_frame: dict[int, list[tuple]] = {}
    for i, f in enumerate(table["frame_index"]):
        by_frame.setdefault(f, []).append((table["true_track_id"][i], table["score"][i], table["mask_rle"][i]))
    runs = [(a, b) for a, b in truth.holds if any(f in by_frame for f in range(a, b))]
    assert runs
    for start, end in runs:
        for f in range(start + 1, end):
            assert by_frame.get(f) == by_frame.get(start)
    firsts = [by_frame.get(a, []) for a, _ in truth.holds]
    assert len({tuple(r[2] for r in rows) for rows in firsts}) > len(firsts) // 2  # drawings differ


def test_default_level_is_hard_but_sensible(episode, detections):
    s = read_unstable_summary(detections)
    assert s.frames == 72 and s.detections + s.missed == s.true_instances
    assert 0.65 <= s.mean_iou <= 0.95
    assert 0.03 <= s.miss_rate <= 0.3
    assert s.false_positives > 0
    assert 0.2 <= s.score_quality_corr <= 0.95  # scores follow quality, loosely
    table = pq.read_table(detections).to_pydict()
    truth = {f: dict(zip(ids.tolist(), masks)) for f, ids, masks in iter_truth_masks(episode, 0, 12)}
    for i, f in enumerate(table["frame_index"]):  # the quality column is the IoU with the truth
        if f < 12 and table["true_track_id"][i] >= 0:
            mask = decode_mask(table["mask_rle"][i], 360, 640)
            assert table["quality"][i] == pytest.approx(region_j(mask, truth[f][table["true_track_id"][i]]), abs=1e-6)


def test_most_confident_frame_is_not_always_the_best(detections):
    table = pq.read_table(detections).to_pydict()
    tracks = np.array(table["true_track_id"])
    score, quality = np.array(table["score"]), np.array(table["quality"])
    disagree = [
        t
        for t in set(tracks[tracks >= 0].tolist())
        if quality[tracks == t][np.argmax(score[tracks == t])] < quality[tracks == t].max()
    ]
    assert disagree


def test_level_sets_how_hard(episode, detections, tmp_path):
    default = read_unstable_summary(detections)
    strong = read_unstable_summary(
        write_unstable_detections(episode, tmp_path / "strong.parquet", seed=5, config=UnstableConfig(level=2.0))
    )
    assert strong.mean_iou < default.mean_iou - 0.1 and strong.miss_rate > default.miss_rate
    clean = read_unstable_summary(
        write_unstable_detections(episode, tmp_path / "clean.parquet", seed=5, config=UnstableConfig(level=0.0))
    )
    assert (clean.mean_iou, clean.missed, clean.false_positives) == (1.0, 0, 0)


def test_bad_config_and_foreign_file(tmp_path):
    with pytest.raises(ValueError, match="miss"):
        UnstableConfig(miss=1.5)
    with pytest.raises(ValueError, match="level"):
        UnstableConfig(level=-1)
    import pyarrow as pa

    pq.write_table(pa.table({"frame_index": [0]}), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a file of unstable detections"):
        read_unstable_summary(tmp_path / "plain.parquet")


def test_persistent_errors_last_their_drawings(episode, tmp_path):
    """persistence=4: whether a character is missed, and each false find, stays the same
    over blocks of 4 drawings; drawn independently (1), they change within blocks."""
    truth = load_truth(episode)
    drawing = {f: a for a, b in truth.holds for f in range(a, b)}
    starts = sorted({drawing.get(f, f) for f in range(truth.frame_count)})  # every drawing's first frame
    coin = UnstableConfig(miss=0.5, miss_small=0, miss_partial=0, false_positives=1.0)  # misses independent of size

    def per_drawing(persistence: int) -> list[tuple[frozenset, frozenset]]:
        path = write_unstable_detections(
            episode, tmp_path / f"p{persistence}.parquet", seed=3, config=replace(coin, persistence=persistence)
        )
        table = pq.read_table(path).to_pydict()
        out = []
        for start in starts:
            rows = [i for i, f in enumerate(table["frame_index"]) if f == start]
            found = frozenset(table["true_track_id"][i] for i in rows if table["true_track_id"][i] >= 0)
            false = frozenset(table["mask_rle"][i] for i in rows if table["true_track_id"][i] < 0)
            out.append((found, false))
        return out

    def changes_inside_blocks(drawings) -> int:
        shown = [
            frozenset(int(t) for t in ids) for _, ids, _ in (next(iter_truth_masks(episode, a, a + 1)) for a in starts)
        ]
        return sum(
            1 for i in range(1, len(drawings)) if i % 4 and shown[i] == shown[i - 1] and drawings[i] != drawings[i - 1]
        )

    assert changes_inside_blocks(per_drawing(4)) == 0
    assert changes_inside_blocks(per_drawing(1)) > 5
