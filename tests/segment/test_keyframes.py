"""Keyframe scoring: the combined score avoids the confident-but-wrong mask that the
confidence baseline picks, and every component is kept and bounded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from celmask.tasks.core.instances import Instances
from celmask.tasks.segment.keyframes import COMPONENTS, KeyframeConfig, choose, score_candidates

H, W = 120, 200


def drawing(x: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat-coloured character with a dark outline at x, and its true mask."""
    image = np.full((H, W, 3), (200, 220, 240), np.uint8)
    cv2.circle(image, (x, 60), 30, (240, 150, 120), -1)
    cv2.circle(image, (x, 60), 30, (20, 20, 20), 2)
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (x, 60), 31, 1, -1)
    return image, mask > 0


def track(masks, scores) -> list[Instances]:
    return [
        Instances.from_masks(m[None], score=np.array([s], np.float32), track_id=np.zeros(1, np.int32))
        for m, s in zip(masks, scores)
    ]


def test_the_score_avoids_the_confident_dilated_mask_that_confidence_picks():
    images, masks = zip(*(drawing(60 + 10 * t) for t in range(5)))
    bad = cv2.dilate(masks[2].astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    observed = list(masks[:2]) + [bad] + list(masks[3:])
    scores = [0.8, 0.8, 0.99, 0.8, 0.8]
    candidates = score_candidates(list(images), list(range(5)), track(observed, scores))[0]
    assert choose(candidates, "confidence").step == 2
    assert choose(candidates, "score").step != 2
    by_step = {c.step: c for c in candidates}
    assert by_step[2].components["quality"] < 0.5 < by_step[1].components["quality"]
    assert by_step[2].components["agreement"] < by_step[3].components["agreement"]


def test_components_are_all_kept_and_bounded_and_the_border_costs_completeness():
    images, masks = zip(*(drawing(x) for x in (60, 100, 20)))  # the last one is cut by the left edge
    candidates = score_candidates(list(images), [10, 12, 15], track(masks, [0.5, 0.6, 0.7]))[0]
    for c in candidates:
        assert set(c.components) == set(COMPONENTS)
        assert all(0.0 <= v <= 1.0 for v in c.components.values()) and 0.0 <= c.total <= 1.0
    assert [c.frame_index for c in candidates] == [10, 12, 15]
    assert candidates[2].components["completeness"] < 0.9 < candidates[1].components["completeness"]
    assert candidates[1].components["position"] == 1.0 and candidates[0].components["position"] == 0.0


def test_one_drawing_and_bad_settings():
    image, mask = drawing(60)
    (only,) = score_candidates([image], [0], track([mask], [0.4]))[0]
    assert only.components["agreement"] == 1.0 and only.components["position"] == 1.0
    assert score_candidates([image], [0], [Instances.empty(H, W)]) == {}
    with pytest.raises(ValueError, match="keyframe weights"):
        KeyframeConfig(weights={"luck": 1.0})
    with pytest.raises(ValueError, match="keyframe must be"):
        choose([only], "random")
