"""Major 11 of issue 13: a video damaged mid-stream. The finished episode's video with
4 KiB of garbage in its middle: two frames do not decode. Every frame keeps its place
in presentation order (no later ``frame_index`` shifts), the two hold the picture and
masks of the frame before, and the damage is recorded in the plan, the episode table
and ``_SUCCESS.json``, and reported by ``validate``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from celmask.tasks.manifest.layout import episode_table, success_path
from celmask.tasks.manifest.read import iter_shots
from celmask.tasks.manifest.validate import validate
from celmask.tasks.manifest.write import VIDEO_DAMAGE_KEY
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import load_plan, plan_episode
from celmask.tasks.run.shot import run_shot
from celmask.tasks.video import frame_times, probe
from celmask.tasks.video.decoding import missing_frames
from tests.support.clips import _corrupt_middle
from tests.support.finished import EPISODE

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def foreground(episode) -> dict[int, np.ndarray]:
    """Frame index -> the union of its masks."""
    out = {}
    for shot in iter_shots(episode):
        for frame, rows in shot.frames():
            mask = np.zeros(shot.size, bool)
            for row in rows:
                mask |= shot.mask(row.rle)
            out[frame] = mask
    return out


def test_damaged_frames_keep_their_place_and_are_recorded(finished, tmp_path):
    video = tmp_path / "damaged.mp4"
    _corrupt_middle(finished.video, video)
    missing = missing_frames(video)
    assert len(missing) >= 1 and len(frame_times(video)) == probe(video).frame_count == 96

    episode = tmp_path / "out" / EPISODE
    plan, _ = plan_episode(video, episode, finished.settings)
    assert plan.missing_frames == missing and load_plan(episode).missing_frames == missing
    assert plan.shots[-1].end == plan.frame_count == 96  # the shots tile every frame of the video
    for shot in plan.shots:
        run_shot(video, shot, episode, finished.settings)
    result = finish_episode(episode, plan)
    assert result.success is not None  # every shot written: complete, and says what it lacks
    damage = {"missing_frames": list(missing)}
    assert json.loads(success_path(episode).read_text())["video_damage"] == damage
    assert json.loads(pq.read_schema(episode_table(episode)).metadata[VIDEO_DAMAGE_KEY.encode()]) == damage

    masks, clean = foreground(episode), foreground(finished.episode)
    assert sorted(masks) == list(range(96))  # a mask entry for every frame, in place
    for index in missing:
        assert (masks[index] == masks[index - 1]).all()
    after = [i for i in range(max(missing) + 8, 96) if clean[i].any()]  # past the damage, the same frames
    ious = [(masks[i] & clean[i]).sum() / (masks[i] | clean[i]).sum() for i in after]
    assert after and np.mean(ious) > 0.9, ious

    problems = [str(p) for p in validate(episode).problems]
    assert len(problems) == 1 and "the video is damaged" in problems[0], problems
    assert f"frames {', '.join(map(str, missing))}" in problems[0]
