"""Instances: construction, validation, indexing, concatenation."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from celmask.tasks.core.instances import NO_TRACK, Instances, mask_boxes


def make_instances(boxes: list[tuple[int, int, int, int]], size=(20, 30), score=None) -> Instances:
    """Instances with rectangular masks at ``boxes`` (x0, y0, x1, y1)."""
    mask = np.zeros((len(boxes), *size), dtype=bool)
    for m, (x0, y0, x1, y1) in zip(mask, boxes):
        m[y0:y1, x0:x1] = True
    score = np.linspace(0.9, 0.1, len(boxes)) if score is None else score
    return Instances.from_masks(mask, score=score, data={"source": np.array(["detected"] * len(boxes))})


def test_boxes_and_area_come_from_the_masks():
    inst = make_instances([(2, 3, 10, 8), (0, 0, 30, 20)])
    assert inst.xyxy.tolist() == [[2, 3, 10, 8], [0, 0, 30, 20]]
    assert inst.area.tolist() == [8 * 5, 600]
    assert inst.track_id.tolist() == [NO_TRACK, NO_TRACK] and inst.class_id.tolist() == [0, 0]
    assert inst.size == (20, 30)
    assert mask_boxes(np.zeros((1, 4, 4), bool)).tolist() == [[0, 0, 0, 0]]
    assert Instances.empty(20, 30).area.tolist() == []


def test_indexing_returns_instances():
    inst = make_instances([(0, 0, 5, 5), (5, 5, 10, 10), (10, 10, 15, 15)])
    assert len(inst[inst.score >= 0.5]) == 2
    assert inst[1].xyxy.tolist() == [[5, 5, 10, 10]]
    assert inst[-1].xyxy.tolist() == [[10, 10, 15, 15]]
    assert inst[[2, 0]].data["source"].tolist() == ["detected", "detected"]
    assert len(inst[1:]) == 2
    with pytest.raises(IndexError, match="bool index"):
        inst[np.array([True, False])]
    with pytest.raises(ValueError, match="mask must be"):
        Instances.from_masks(np.zeros((4, 4), bool), score=np.zeros(0))


def test_empty_and_concat():
    empty = Instances.empty(20, 30)
    assert len(empty) == 0 and empty.size == (20, 30)
    a, b = make_instances([(0, 0, 5, 5)]), make_instances([(1, 1, 4, 4), (2, 2, 3, 3)])
    both = Instances.concat([a, b])
    assert len(both) == 3 and both.xyxy[2].tolist() == [2, 2, 3, 3]
    with pytest.raises(ValueError, match="one frame size"):
        Instances.concat([a, make_instances([(0, 0, 1, 1)], size=(10, 10))])
    with pytest.raises(ValueError, match="at least one"):
        Instances.concat([])


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({}, does_not_raise()),
        ({"mask": np.zeros((1, 4, 4), np.uint8)}, pytest.raises(ValueError, match="mask must be")),
        ({"score": np.zeros(2, np.float32)}, pytest.raises(ValueError, match=r"score must have shape \(1,\)")),
        ({"xyxy": np.zeros((1, 4), np.int32)}, pytest.raises(ValueError, match="xyxy")),
        ({"data": {"x": np.zeros(3)}}, pytest.raises(ValueError, match="data\\['x'\\]")),
    ],
)
def test_validation(kwargs, expectation):
    fields = dict(
        mask=np.zeros((1, 4, 4), bool),
        xyxy=np.zeros((1, 4), np.float32),
        score=np.zeros(1, np.float32),
        class_id=np.zeros(1, np.int32),
        track_id=np.zeros(1, np.int32),
    )
    with expectation:
        Instances(**{**fields, **kwargs})
