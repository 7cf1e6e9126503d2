"""Evidence: a detector's one-off or sporadic false positives, unstable shapes and
frame-filling blobs make no track; characters detected consistently are kept, in
very short shots too; the result depends on the input alone."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.tasks.core.config import load_config
from celmask.tasks.core.instances import Instances
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.evidence import EvidenceConfig, keep_evidenced, needed_drawings, track_evidence

H, W = 90, 160


def box(x: int, y: int, w: int = 20, h: int = 30) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = True
    return m


def drawings(n: int, tracks: dict[int, dict[int, np.ndarray]]) -> list[Instances]:
    """One Instances per drawing of an ``n``-drawing shot from track id -> {drawing: mask}."""
    out = []
    for step in range(n):
        rows = [(t, m[step]) for t, m in sorted(tracks.items()) if step in m]
        masks = np.stack([m for _, m in rows]) if rows else np.zeros((0, H, W), bool)
        out.append(
            Instances.from_masks(
                masks, score=np.full(len(rows), 0.8, np.float32), track_id=np.array([t for t, _ in rows], np.int32)
            )
        )
    return out


def walking(steps: range, y: int = 20) -> dict[int, np.ndarray]:
    """A character moving right 3 pixels a drawing, detected on ``steps``."""
    return {s: box(5 + 3 * s, y) for s in steps}


def ids(out: list[Instances]) -> list[list[int]]:
    return [inst.track_id.tolist() for inst in out]


def test_a_false_positive_seen_once_makes_no_track():
    out = keep_evidenced(drawings(20, {0: walking(range(20)), 1: {7: box(120, 50)}}))
    assert ids(out) == [[0]] * 20


def test_false_positives_on_a_small_share_of_the_drawings_make_no_track_but_a_late_entrance_does():
    shot = drawings(
        40,
        {
            0: walking(range(40)),
            1: {s: box(120, 50) for s in range(10, 15)},  # 5 of 40 drawings: a sign read as a character for a moment
            2: {s: box(100, 5, 30, 40) for s in range(32, 40)},  # 8 of 40: a character walks in at the end
        },
    )
    out = keep_evidenced(shot)
    assert ids(out) == [[0]] * 32 + [[0, 1]] * 8  # the late entrance is renumbered after the first character
    assert np.array_equal(out[35].mask[1], box(100, 5, 30, 40))


def test_detections_scattered_over_the_shot_are_no_evidence():
    # on 10 of 40 drawings (25%, above min_share), but only every 4th: strung together by the tracker's gap bridging
    out = keep_evidenced(drawings(40, {0: walking(range(40)), 1: {s: box(120, 50) for s in range(0, 40, 4)}}))
    assert ids(out) == [[0]] * 40


def test_a_shape_that_does_not_hold_is_no_character_but_a_zoom_is():
    flicker = {s: box(60, 40, 60, 6) if s % 2 else box(87, 10, 6, 60) for s in range(20)}  # a bar, then a post, ...
    zoom = {s: box(10, 10, 10 + s, 15 + 2 * s) for s in range(20)}  # a push in: the size changes, the shape holds
    out = keep_evidenced(drawings(20, {0: zoom, 1: flicker}))
    assert ids(out) == [[0]] * 20
    assert track_evidence(drawings(20, {0: zoom}))[0].shape_iou > 0.85


def test_a_frame_filling_blob_is_no_character_but_a_close_up_is():
    blob = {s: box(0, 0, W, H - 3) for s in range(10)}
    close_up = {s: box(20, 0, 110, 60) for s in range(10)}  # about half the frame
    out = keep_evidenced(drawings(10, {0: blob, 1: close_up}))
    assert ids(out) == [[0]] * 10 and np.array_equal(out[0].mask[0], close_up[0])


@pytest.mark.parametrize(
    ("n", "tracks", "kept"),
    [
        (1, {0: {0: box(10, 10)}, 1: {0: box(100, 40)}}, [[0, 1]]),  # one drawing: whatever was found on it
        (2, {0: walking(range(2)), 1: {1: box(100, 40)}}, [[0], [0]]),  # two: both
        (3, {0: walking(range(2)), 1: walking(range(3), y=50)}, [[0, 1], [0, 1], [1]]),  # three: two of them
        (6, {0: walking(range(6)), 1: {s: box(100, 40) for s in (2, 3)}}, [[0], [0], [0, 1], [0, 1], [0], [0]]),
    ],
)
def test_very_short_shots_keep_their_characters(n, tracks, kept):
    assert ids(keep_evidenced(drawings(n, tracks))) == kept


def test_drawings_needed_grow_with_the_shot_from_a_floor():
    assert [needed_drawings(n, EvidenceConfig()) for n in (1, 2, 3, 13, 14, 20, 100)] == [1, 2, 2, 2, 3, 3, 15]
    assert needed_drawings(100, EvidenceConfig(min_share=0.0, min_drawings=1)) == 1


def test_same_input_same_tracks_and_the_input_is_left_alone():
    def shot() -> list[Instances]:
        rng = np.random.default_rng(3)
        noise = {
            int(s): box(int(rng.integers(0, 130)), int(rng.integers(0, 60)), 12, 12)
            for s in rng.choice(30, 6, replace=False)
        }
        return drawings(
            30, {0: walking(range(30)), **{i + 1: {s: m} for i, (s, m) in enumerate(sorted(noise.items()))}}
        )

    given = shot()
    before = ids(given)
    first, second = keep_evidenced(given), keep_evidenced(shot())
    assert ids(first) == ids(second) == [[0]] * 30
    assert all(np.array_equal(a.mask, b.mask) and np.array_equal(a.score, b.score) for a, b in zip(first, second))
    assert ids(given) == before


def test_no_detections_no_tracks():
    assert ids(keep_evidenced(drawings(3, {}))) == [[], [], []]
    assert keep_evidenced([]) == []


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        (box(0, 0), box(100, 50), 1.0),  # moved: the same shape
        (box(0, 0, 20, 20), box(50, 50, 20, 10), 0.5),  # half of it
        (box(140, 0, 20, 20), box(0, 70, 20, 20), 1.0),  # across the frame
        (box(0, 0), np.zeros((H, W), bool), 0.0),  # gone
    ],
)
def test_shape_overlap_ignores_motion(first, second, overlap):
    assert track_evidence(drawings(2, {0: {0: first, 1: second}}))[0].shape_iou == pytest.approx(overlap)


def test_settings_are_keys_and_checked():
    config = load_config(SegmentConfig(), None, ["evidence.min_share=0.3", "evidence.min_drawings=4"])
    assert config.evidence == EvidenceConfig(min_share=0.3, min_drawings=4)
    with pytest.raises(ValueError, match="min_share"):
        EvidenceConfig(min_share=1.5)
    with pytest.raises(ValueError, match="min_drawings"):
        EvidenceConfig(min_drawings=0)
