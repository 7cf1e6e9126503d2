"""Segment a generated episode's true shots and score the masks against its truth.

Shared by ``bench/segment.py`` and the quality tests, so both measure the same
thing: every true shot through :func:`~celmask.tasks.segment.shot.segment_shot`, each frame's
masks scored DAVIS-style (:mod:`celmask.tasks.eval.masks`), plus time per stage and the
model calls held frames saved. The true shots are used, not detected ones, so the
figures isolate segmentation from shot detection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from celmask.tasks.core.types import Shot
from celmask.tasks.eval.masks import FrameMasks, SegScore, score_shot, score_video
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_sets import Models, build_models
from celmask.tasks.segment.shot import ShotSegmentation, segment_shot
from celmask.tasks.synth import iter_truth_masks, load_truth


@dataclass
class EpisodeEval:
    score: SegScore
    frames: int = 0
    drawings: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    shots: int = 0

    @property
    def model_calls_saved(self) -> int:
        return self.frames - self.drawings

    @property
    def fp_tracks_per_shot(self) -> float:
        """Predicted tracks matching no true track, per true shot (empty shots count)."""
        return self.score.fp_tracks / self.shots if self.shots else float("nan")

    def add(self, other: EpisodeEval) -> EpisodeEval:
        seconds = dict(self.seconds)
        for stage, s in other.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
        return EpisodeEval(
            SegScore.combine([self.score, other.score]),
            self.frames + other.frames,
            self.drawings + other.drawings,
            seconds,
            self.shots + other.shots,
        )


TRACK_KEY = 100_000
"""Predicted ids become ``shot * TRACK_KEY + track``: unique across the detected shots."""


def evaluate_detected_shots(
    episode_dir: str | Path, config: SegmentConfig, *, models: Models | None = None, shots: list[Shot] | None = None
) -> EpisodeEval:
    """As :func:`evaluate_episode`, but segmenting the shots celmask detects in the video
    (default shot settings; ``shots`` to give them), scored against the true shots: what
    a user gets, missed and false cuts included."""
    from celmask.tasks.shots.detect import detect_shots

    episode_dir = Path(episode_dir)
    video = episode_dir / "episode.mp4"
    truth = load_truth(episode_dir)
    models = models or build_models(config)
    shots = detect_shots(video).shots if shots is None else shots
    total = EpisodeEval(SegScore.combine([]), shots=len(truth.shots))

    def frames() -> Iterator[FrameMasks]:
        nonlocal total
        for shot in shots:
            result = segment_shot(video, shot, config, models=models)
            total = total.add(
                EpisodeEval(SegScore.combine([]), len(result.frame_indices), len(result.instances), result.seconds)
            )
            for frame in predicted_frames(result):
                yield frame._replace(track_ids=shot.index * TRACK_KEY + frame.track_ids)

    score = score_video(frames(), iter_truth_masks(episode_dir), truth.holds, [(s.start, s.end) for s in truth.shots])
    return replace(total, score=score)


def predicted_frames(result: ShotSegmentation) -> Iterator[FrameMasks]:
    """The shot's masks as the metric's frame stream (working size = source size here)."""
    for index, _, inst in result.frames():
        if inst.size != result.source_size:
            raise ValueError(
                f"masks are {inst.size}, the truth {result.source_size}: evaluate at work_size >= the source"
            )
        yield FrameMasks(index, inst.track_id.astype(np.int64), inst.mask)


def evaluate_episode(episode_dir: str | Path, config: SegmentConfig, *, models: Models | None = None) -> EpisodeEval:
    """Segment every true shot of the generated episode in ``episode_dir`` with
    ``config`` and score it against the truth."""
    episode_dir = Path(episode_dir)
    truth = load_truth(episode_dir)
    models = models or build_models(config)
    total = EpisodeEval(SegScore.combine([]))
    for s in truth.shots:
        shot = Shot(s.index, s.start, s.end, 0.0, 0.0)
        result = segment_shot(episode_dir / "episode.mp4", shot, config, models=models)
        holds = [(a, b) for a, b in truth.holds if s.start <= a and b <= s.end]
        score = score_shot(predicted_frames(result), iter_truth_masks(episode_dir, s.start, s.end), holds)
        total = total.add(EpisodeEval(score, len(result.frame_indices), len(result.instances), result.seconds, 1))
    return total


def manifest_frames(episode_dir: str | Path, frame_count: int) -> Iterator[FrameMasks]:
    """Every frame of a written episode (frames without masks too) as the metric's stream."""
    from celmask.tasks.manifest.schema import iter_masks

    masks = iter_masks(episode_dir)
    pending = next(masks, None)
    for frame in range(frame_count):
        ids, found = [], []
        while pending is not None and pending[0] == frame:
            _, shot, track, mask = pending
            ids.append(shot * TRACK_KEY + track)
            found.append(mask)
            pending = next(masks, None)
        yield FrameMasks(frame, np.asarray(ids, np.int64), np.stack(found) if found else np.zeros((0, 1, 1), bool))


def score_manifest(episode_dir: str | Path, truth_dir: str | Path) -> SegScore:
    """The masks of a whole-episode run (detected shots and all) against a generated
    episode's truth: what a user of the manifest gets."""
    truth = load_truth(truth_dir)
    return score_video(
        manifest_frames(episode_dir, truth.frame_count),
        iter_truth_masks(truth_dir),
        truth.holds,
        [(s.start, s.end) for s in truth.shots],
    )


def matched_characters(episode_dir: str | Path, truth_dir: str | Path) -> dict[tuple[int, int], int]:
    """(shot, track) of a whole-episode run -> the true ``character_id`` of the true track
    it was matched to (:func:`score_manifest`); unmatched tracks are left out."""
    truth = load_truth(truth_dir)
    character = {(s.start, t.track_id): t.character_id for s in truth.shots for t in s.tracks}
    score = score_manifest(episode_dir, truth_dir)
    return {
        divmod(t.matched, TRACK_KEY): character[t.shot_start, t.track_id] for t in score.tracks if t.matched is not None
    }
