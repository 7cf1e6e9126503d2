"""The generator's hard cases for shot detection (celmask.tasks.synth.edits): opt in,
planned by their own rules, drawn as planned, and in the truth."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from celmask.tasks.synth import plan_timeline, render_frames
from celmask.tasks.synth.edits import MARGIN, cover
from celmask.tasks.synth.timeline import EpisodePlan
from celmask.tasks.synth.truth import Truth, truth_from_dict

FPS = Fraction(24000, 1001)
SEEDS = range(1, 7)


def plan(seed: int, hard: bool, frames: int = 1439) -> EpisodePlan:
    return plan_timeline(seed, frame_count=frames, width=640, height=360, fps=FPS, hard_cases=hard)


@pytest.fixture(scope="module")
def hard_plans() -> list[EpisodePlan]:
    return [plan(seed, True) for seed in SEEDS]


def test_hard_cases_are_opt_in_and_leave_the_other_shots_as_the_seed_gives_them(hard_plans):
    for seed, hard in zip(SEEDS, hard_plans):
        default = plan(seed, False)
        assert not any(s.edit or s.occlusion or s.switch for s in default.shots)
        assert [(s.start, s.end) for s in hard.shots] == [(s.start, s.end) for s in default.shots]
        for k, (h, d) in enumerate(zip(hard.shots, default.shots)):
            cut_after = k + 1 < len(hard.shots) and hard.shots[k + 1].edit  # its next transition became a cut
            if not h.edit and h.switch is None and not cut_after:
                assert replace(h, occlusion=None) == d


def test_every_kind_is_planned_as_its_rules_say(hard_plans):
    edits = {}
    for p in hard_plans:
        flashes = [f.frame for s in p.shots for f in s.flashes]
        for k, s in enumerate(p.shots):
            if s.edit:
                edits[s.edit] = edits.get(s.edit, 0) + 1
                assert s.transition.kind == "cut" and len(set(s.camera)) == 1
                framing = p.shots[k - 2] if s.edit in ("cut-out", "return") else p.shots[k - 1]
                assert s.set_id == framing.set_id
                zoom = s.camera[0].zoom / framing.camera[-1].zoom
                if s.edit == "cut-in":
                    assert 1.25 <= zoom <= 1.6
                elif s.edit in ("cut-out", "return"):
                    assert s.camera[0] == framing.camera[-1]
                    assert [c.character_id for c in s.characters] == [c.character_id for c in framing.characters]
            if s.occlusion is not None:
                o = s.occlusion
                assert 5 <= o.covered[1] - o.covered[0] <= 21 and o.start < o.covered[0] < o.covered[1] < o.end
                assert s.start + MARGIN <= o.start and o.end <= s.end - MARGIN
                assert not any(o.start - MARGIN <= f < o.end + MARGIN for f in flashes)
            if s.switch is not None:
                assert s.kind == "closeup" and s.switch.set_id != s.set_id
                assert p.sets[s.switch.set_id].kind == "abstract"
    assert set(edits) == {"cut-in", "cut-out", "jump", "return"}
    assert sum(s.occlusion is not None for p in hard_plans for s in p.shots) >= 10
    assert sum(s.switch is not None for p in hard_plans for s in p.shots) >= 2


def test_an_occlusion_covers_the_whole_frame_and_hides_the_characters(hard_plans):
    p, shot = next((p, s) for p in hard_plans for s in p.shots if s.occlusion is not None and s.characters)
    o = shot.occlusion
    short = replace(p, frame_count=o.end + 1)
    for frame in render_frames(short):
        if o.covered[0] <= frame.index < o.covered[1]:
            assert frame.labels is not None and not frame.labels.any()
            top = frame.rgb[: frame.rgb.shape[0] * 3 // 4 : 9, ::9]  # burnt-in subtitles go over it, at the bottom
            assert {tuple(int(v) for v in c) for c in top.reshape(-1, 3)} <= {o.fill, o.shadow, o.line}
    image = np.full((36, 64, 3), 7, np.uint8)
    labels = np.ones((36, 64), np.uint8)
    same, same_labels = cover(image, labels, o, o.start - 1)  # before it shows: untouched
    assert same is image and same_labels is labels


def test_background_switch_keeps_the_close_up_and_changes_the_set(hard_plans):
    p, shot = next((p, s) for p in hard_plans for s in p.shots if s.switch is not None)
    frame = shot.content_start + shot.drawings[shot.switch.drawing]
    short = replace(p, frame_count=frame + 1)
    before, after = [f for f in render_frames(short)][-2:]
    assert before.labels is not None and after.labels is not None
    character = (before.labels > 0) & (after.labels > 0)
    background = (before.labels == 0) & (after.labels == 0)
    assert character.mean() > 0.05  # the close-up stays where it was
    changed = np.abs(before.rgb.astype(int) - after.rgb.astype(int)).max(axis=2) > 24
    assert changed[background].mean() > 0.5 > changed[character].mean()


def test_truth_keeps_the_hard_cases_and_default_truth_is_unchanged():
    base = dict(seed=1, width=64, height=64, fps=FPS, frame_count=0, shots=(), flashes=(), holds=())
    hard = Truth(**base, hard_cases=True, occlusions=((2, 6),), switches=(8,))
    assert truth_from_dict(json.loads(hard.to_json())) == hard
    default = json.loads(Truth(**base).to_json())
    assert not {"hard_cases", "occlusions", "switches"} & set(default)
