"""Tracks: overlap carries a character from drawing to drawing, colour keeps two
crossing characters apart and re-attaches one after a gap, every detection gets a
track (which tracks are kept: tests/segment/test_evidence.py)."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.tasks.core.instances import Instances
from celmask.tasks.segment.tracks import TrackConfig, assign_tracks

H, W = 120, 200
RED, BLUE = (220, 40, 40), (40, 60, 220)


def scene(objects: list[tuple[tuple[int, int, int], int, int]]) -> tuple[np.ndarray, Instances]:
    """An image with filled 30x30 squares (colour, x, y) and their instances, in the given order."""
    image = np.full((H, W, 3), 235, np.uint8)
    masks = []
    for colour, x, y in objects:
        m = np.zeros((H, W), bool)
        m[y : y + 30, x : x + 30] = True
        image[m] = colour
        masks.append(m)
    masks_arr = np.stack(masks) if masks else np.zeros((0, H, W), bool)
    return image, Instances.from_masks(masks_arr, score=np.full(len(masks), 0.9, np.float32))


def ids_by_colour(images, out) -> list[dict[tuple[int, ...], int]]:
    rows = []
    for image, inst in zip(images, out):
        rows.append(
            {
                tuple(int(c) for c in image[inst.mask[i]].mean(0).round()): int(inst.track_id[i])
                for i in range(len(inst))
            }
        )
    return rows


def test_moving_objects_keep_their_ids_even_when_listed_in_another_order():
    frames = [scene([(RED, 10 + 8 * t, 20), (BLUE, 150 - 8 * t, 70)][:: 1 if t % 2 else -1]) for t in range(8)]
    images, dets = zip(*frames)
    out = assign_tracks(list(images), list(dets))
    rows = ids_by_colour(images, out)
    assert all(r == rows[0] for r in rows) and len(set(rows[0].values())) == 2


def test_crossing_objects_are_kept_apart_by_colour():
    # red moves right, blue moves left on the same row; they overlap in the middle drawings
    frames = [scene([(RED, 20 + 20 * t, 40), (BLUE, 150 - 20 * t, 45)]) for t in range(8)]
    images, dets = zip(*frames)
    out = assign_tracks(list(images), list(dets))
    red = {int(inst.track_id[0]) for inst in out}  # rows keep their order: red first
    blue = {int(inst.track_id[1]) for inst in out}
    assert len(red) == 1 and len(blue) == 1 and red != blue


def test_reappearance_after_a_gap_continues_the_track_and_a_long_absence_does_not():
    frames = (
        [scene([(RED, 40, 40)]) for _ in range(3)]
        + [scene([]) for _ in range(4)]
        + [scene([(RED, 70, 40)]) for _ in range(3)]
    )
    images, dets = zip(*frames)
    out = assign_tracks(list(images), list(dets), TrackConfig(max_gap=5))
    assert {int(i) for inst in out for i in inst.track_id} == {0}
    out = assign_tracks(list(images), list(dets), TrackConfig(max_gap=2))
    assert {int(i) for inst in out for i in inst.track_id} == {0, 1}


def test_every_detection_gets_a_track_numbered_in_order_of_first_appearance():
    frames = [scene([(RED, 10 + 5 * t, 20)] + ([(BLUE, 150, 80)] if t == 2 else [])) for t in range(5)]
    images, dets = zip(*frames)
    assert [i.track_id.tolist() for i in assign_tracks(list(images), list(dets))] == [[0], [0], [0, 1], [0], [0]]


def test_no_detections_and_mismatched_inputs():
    image, det = scene([])
    assert [len(i) for i in assign_tracks([image, image], [det, det])] == [0, 0]
    assert assign_tracks([], []) == []
    with pytest.raises(ValueError, match="one image per detections"):
        assign_tracks([image], [])
    with pytest.raises(ValueError, match="max_gap"):
        TrackConfig(max_gap=-1)
