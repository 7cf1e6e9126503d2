"""The ``correct-shot`` flow's work: a shot's stored corrections applied, the episode finished."""

from __future__ import annotations

import shutil

import numpy as np

from celmask.flows.correct import correct_shot_flow
from celmask.tasks.manifest.corrections import applied, save_correction
from celmask.tasks.manifest.layout import shot_path
from celmask.tasks.manifest.schema import iter_masks
from celmask.tasks.manifest.validate import validate
from celmask.tasks.run.correct import make_correction
from celmask.tasks.run.plan import load_plan


def test_the_flow_applies_a_shots_stored_corrections(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished.out, out)
    episode = out / finished.episode.name
    shot = load_plan(episode).shots[0]
    (mask,) = [np.roll(m, 8, axis=1) for *_, m in iter_masks(episode, frame=20, track=(0, 0))]
    save_correction(episode, make_correction(episode, shot, 0, 20, mask))
    result = correct_shot_flow.fn(str(episode), 0)
    assert result["complete"] and result["summary"]["seconds"]["correct"] > 0
    assert applied(shot_path(episode, 0))["applied"] == ["track_0000_frame_000020.json"]
    (stored,) = [m for *_, m in iter_masks(episode, frame=20, track=(0, 0))]
    assert np.array_equal(stored, mask) and not validate(episode).problems
