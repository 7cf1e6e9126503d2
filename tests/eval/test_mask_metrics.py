"""DAVIS-style J, F, track matching and flicker (celmask.tasks.eval.masks): hand-checked
cases, and F against a plain transcription of the DAVIS reference code."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from celmask.tasks.eval.masks import (
    FrameMasks,
    boundary_f,
    match_tracks,
    region_j,
    score_shot,
    score_video,
    tolerance_px,
)

H, W = 360, 640


def rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def frame(index: int, tracks: dict[int, np.ndarray], h: int = H, w: int = W) -> FrameMasks:
    ids = np.array(sorted(tracks), np.int32)
    masks = np.stack([tracks[i] for i in sorted(tracks)]) if tracks else np.zeros((0, h, w), bool)
    return FrameMasks(index, ids, masks)


def test_tolerance_is_davis_default_at_640x360():
    assert tolerance_px(H, W) == 6  # ceil(0.008 * 734.3)
    assert tolerance_px(H, W, 3) == 3  # >= 1: pixels


def test_identical_disjoint_and_shifted_masks():
    a = rect(100, 200, 100, 120)
    assert region_j(a, a) == 1.0 and boundary_f(a, a) == 1.0
    far = rect(100, 200, 400, 420)
    assert region_j(a, far) == 0.0 and boundary_f(a, far) == 0.0
    shifted = rect(100, 200, 101, 121)
    assert region_j(a, shifted) == pytest.approx(19 / 21)
    assert boundary_f(a, shifted) == 1.0  # 1 px is inside the 6 px tolerance


def test_empty_masks():
    empty = np.zeros((H, W), bool)
    a = rect(10, 20, 10, 20)
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_j(a, empty) == 0.0 and boundary_f(a, empty) == 0.0
    assert region_j(empty, a) == 0.0 and boundary_f(empty, a) == 0.0


def test_boundary_f_by_hand():
    # seg2bmap of the single pixel (5, 5): (4, 4), (4, 5), (5, 4), (5, 5). Shifted 3 columns,
    # half of each boundary lies within 2 px of the other: precision = recall = 1/2.
    true, pred = rect(5, 6, 5, 6, 20, 20), rect(5, 6, 8, 9, 20, 20)
    assert boundary_f(pred, true, bound_th=2) == pytest.approx(0.5)
    assert boundary_f(pred, true, bound_th=3) == 1.0


def _davis_f(fg: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """davis2017-evaluation's f_measure and seg2bmap, transcribed."""

    def seg2bmap(seg):
        e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = seg ^ e | seg ^ s | seg ^ se
        b[-1, :] = seg[-1, :] ^ e[-1, :]
        b[:, -1] = seg[:, -1] ^ s[:, -1]
        b[-1, -1] = 0
        return b

    r = math.ceil(bound_th * np.linalg.norm(fg.shape))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (x * x + y * y <= r * r).astype(np.uint8)
    fb, gb = seg2bmap(fg), seg2bmap(gt)
    fd, gd = (cv2.dilate(b.astype(np.uint8), disk).astype(bool) for b in (fb, gb))
    nf, ng = fb.sum(), gb.sum()
    if nf == 0 or ng == 0:
        precision, recall = (1.0, 1.0) if nf == ng else (float(nf == 0), float(ng == 0))
    else:
        precision, recall = (fb & gd).sum() / nf, (gb & fd).sum() / ng
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_f_matches_davis_reference():
    rng = np.random.default_rng(0)

    def blob() -> np.ndarray:
        m = np.zeros((H, W), np.uint8)
        for _ in range(rng.integers(1, 4)):  # ellipses, some cut by the frame edge
            centre = (int(rng.integers(-40, W + 40)), int(rng.integers(-40, H + 40)))
            axes = (int(rng.integers(2, 120)), int(rng.integers(2, 120)))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return m > 0

    for _ in range(40):
        a = blob()
        b = np.roll(a, int(rng.integers(-9, 9)), axis=1) if rng.random() < 0.5 else blob()
        assert boundary_f(a, b) == pytest.approx(_davis_f(a, b))
    a, b = blob(), blob()  # pycocotools decodes to Fortran order
    assert boundary_f(np.asfortranarray(a), np.asfortranarray(b)) == pytest.approx(_davis_f(a, b))
    full = np.ones((H, W), bool)
    assert boundary_f(full, full) == _davis_f(full, full) == 1.0  # no boundary inside the frame


def test_matching_finds_the_permutation():
    true = {0: rect(10, 60, 10, 40), 1: rect(100, 160, 300, 340), 2: rect(200, 300, 500, 560)}
    pred = {10: true[2] | rect(200, 300, 560, 562), 11: np.roll(true[0], 2, axis=1), 12: true[1]}
    frames_true = [frame(i, true) for i in range(5)]
    frames_pred = [frame(i, pred) for i in range(5)]
    assert match_tracks(frames_pred, frames_true) == {10: 2, 11: 0, 12: 1}


def test_matching_is_optimal_not_greedy():
    # A overlaps T1 most (IoU 9/13), but B overlaps only T1 (0.6): the best total is
    # A->T2 (3/19) + B->T1, which greedy matching on the largest IoU misses.
    t1, t2 = rect(0, 10, 0, 10, 10, 40), rect(0, 10, 10, 20, 10, 40)
    a, b = rect(0, 10, 1, 13, 10, 40), rect(0, 10, 0, 6, 10, 40)
    far = rect(0, 10, 30, 40, 10, 40)  # overlaps nothing: stays unmatched
    got = match_tracks([frame(0, {7: a, 8: b, 9: far}, 10, 40)], [frame(0, {1: t1, 2: t2}, 10, 40)])
    assert got == {7: 2, 8: 1}


def test_perfect_prediction_scores_one():
    shift = [0, 1, 2, 2, 2, 5]  # held still on frames 2-4
    truth = [frame(i, {0: rect(50, 150, 50 + x, 100 + x), 1: rect(200, 300, 300, 400)}) for i, x in enumerate(shift)]
    pred = [frame(f.frame_index, {5: f.masks[1], 3: f.masks[0]}) for f in truth]
    score = score_shot(pred, truth, held_runs=[(2, 5)])
    assert (score.j, score.f, score.jf) == (1.0, 1.0, 1.0)
    assert score.flicker == 0.0 and score.flicker_pairs == 2 * 2  # two tracks, frame pairs (2, 3) and (3, 4)
    assert (score.fp_tracks, score.fp_pixel_share) == (0, 0.0)
    assert {(t.track_id, t.matched) for t in score.tracks} == {(0, 3), (1, 5)}


def test_frames_where_only_one_side_is_present():
    m = rect(50, 150, 50, 100)
    truth = [frame(i, {0: m} if i < 5 else {}) for i in range(10)]
    pred = [frame(i, {0: m} if i < 7 else {}) for i in range(10)]  # lingers 2 frames after the character left
    score = score_shot(pred, truth)
    (track,) = score.tracks
    assert track.frames == 7 and score.j == pytest.approx(5 / 7) and score.f == pytest.approx(5 / 7)


def test_unmatched_tracks_are_misses_and_false_positives():
    t0, t1, ghost = rect(10, 60, 10, 40), rect(100, 160, 300, 340), rect(300, 340, 600, 640)
    truth = [frame(i, {0: t0, 1: t1}) for i in range(4)]
    pred = [frame(i, {0: t0, 9: ghost}) for i in range(4)]
    score = score_shot(pred, truth)
    assert [(t.track_id, t.matched, t.frames, t.j) for t in score.tracks] == [(0, 0, 4, 1.0), (1, None, 4, 0.0)]
    assert score.j == 0.5 and score.f == 0.5
    assert score.pred_tracks == 2 and score.fp_tracks == 1
    assert score.fp_pixel_share == pytest.approx(ghost.sum() / (ghost.sum() + t0.sum()))


def test_flicker_counts_only_held_frames():
    m = rect(100, 200, 100, 120)
    truth = [frame(i, {0: m}) for i in range(8)]
    jitter = [frame(i, {0: np.roll(m, i % 2, axis=1)}) for i in range(8)]
    held = [(0, 4)]  # pairs (0, 1), (1, 2), (2, 3); frames 4.. are new drawings
    score = score_shot(jitter, truth, held)
    assert score.flicker_pairs == 3 and score.flicker == pytest.approx(1 - 19 / 21)
    steady = score_shot([frame(i, {0: m}) for i in range(8)], truth, held)
    assert steady.flicker == 0.0
    blink = [frame(i, {0: m} if i != 2 else {}) for i in range(8)]  # vanishes on a held drawing
    assert score_shot(blink, truth, held).flicker == pytest.approx(2 / 3)


def test_video_matches_tracks_per_shot():
    a, b = rect(10, 60, 10, 40), rect(100, 160, 300, 340)
    truth = [frame(i, {0: a} if i < 3 else {0: b, 1: a}) for i in range(6)]
    pred = [frame(i, {0: a} if i < 3 else {0: a, 1: b}) for i in range(6)]  # ids restart after the cut
    per_shot = score_video(pred, truth, [], [(0, 3), (3, 6)])
    assert per_shot.j == 1.0 and len(per_shot.tracks) == 3 and per_shot.fp_tracks == 0
    assert score_video(pred, truth, [], [(0, 6)]).j == 0.5  # as one shot, the ids mix
    assert math.isnan(score_video([], [], [], []).j)


def test_streams_must_be_in_step():
    m = rect(0, 10, 0, 10)
    with pytest.raises(ValueError, match="in step"):
        score_shot([frame(1, {0: m})], [frame(0, {0: m})])
    with pytest.raises(ValueError):
        score_shot([frame(0, {0: m})], [frame(0, {0: m}), frame(1, {0: m})])
