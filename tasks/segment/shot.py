"""``segment_shot``: a stable mask for every character in every frame of one shot.

    decode the shot at working resolution, keeping one image per unique drawing
    detect characters on each unique drawing (held frames reuse the result)
    associate detections into tracks (tasks/segment/tracks.py)
    drop the tracks whose detections are no evidence of a character (tasks/segment/evidence.py)
    score every drawing of every track as a keyframe (tasks/segment/keyframes.py)
    propagate each track forward and backward from its keyframe (tasks/segment/propagate.py)
    refine the masks, batched by drawing
    copy each drawing's result to its held frames

Plain function on plain data, no Prefect: the flows wrap it. Memory is bounded by
the shot's unique drawings at working resolution (``work_size``), never by the
episode or by the source resolution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from celmask.tasks.core.instances import Instances
from celmask.tasks.core.types import Shot, Source, still_size
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.evidence import keep_evidenced
from celmask.tasks.segment.keyframes import Candidate, KeyframeConfig, score_candidates
from celmask.tasks.segment.model_sets import Models, lend_models
from celmask.tasks.segment.propagate import PropagationConfig, propagate_track, sharing
from celmask.tasks.segment.tracks import assign_tracks
from celmask.tasks.shots.holds import HoldConfig, block_change
from celmask.tasks.video import Frame, iter_frames, output_size, probe

HOLD_ANALYSIS_WIDTH = 160
"""Width at which held frames are found, as in shot detection (tasks/shots/holds.py)."""


@dataclass
class ShotSegmentation:
    """One shot's masks: per unique drawing, and which frames show which drawing."""

    shot: Shot
    frame_indices: np.ndarray
    """(n,) int64 episode frame index of each frame of the shot."""
    times: np.ndarray
    """(n,) float64 presentation time of each frame."""
    drawing: np.ndarray
    """(n,) int64: the unique drawing each frame shows (index into ``instances``)."""
    instances: list[Instances]
    """One per unique drawing, at working resolution, with ``track_id`` and ``data``
    ``source`` (a :class:`~celmask.tasks.core.types.Source` code), ``is_keyframe``, ``keyframe_frame`` (the frame
    its mask was propagated from; -1 without propagation)."""
    work_size: tuple[int, int]
    """(height, width) the masks are at."""
    source_size: tuple[int, int]
    """(height, width) of the video's frames."""
    keyframes: dict[int, list[Candidate]]
    """track id -> the keyframes its masks came from (first: the main one)."""
    candidates: dict[int, list[Candidate]]
    """track id -> every drawing of the track scored as a keyframe."""
    model_ids: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage."""
    stills: list[np.ndarray] = field(default_factory=list)
    """Each unique drawing, STILL_HEIGHT pixels tall (RGB): contact sheets of the shot
    without decoding it again."""

    @property
    def model_calls_saved(self) -> int:
        """Frames that reused their drawing's result instead of running the models."""
        return len(self.frame_indices) - len(self.instances)

    def frames(self) -> Iterator[tuple[int, float, Instances]]:
        """(frame index, time, instances) for every frame of the shot, in order."""
        for index, t, d in zip(self.frame_indices, self.times, self.drawing):
            yield int(index), float(t), self.instances[d]


def work_size(source: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) to decode at: the source scaled so its long side is at most
    ``long_side`` (never up), both even."""
    w, h = source
    scale = min(1.0, long_side / max(w, h))
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def unique_drawings(
    frames: Iterator[Frame], hold: HoldConfig | None
) -> tuple[list[Frame], list[int], list[float], list[int]]:
    """The frames that show a new drawing, and for every frame its index, time and the
    drawing it shows. Held frames are dropped as they stream by; ``hold=None`` keeps
    every frame as its own drawing."""
    kept: list[Frame] = []
    indices, times, drawing = [], [], []
    previous = None
    for frame in frames:
        grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        small = cv2.resize(
            grey, (HOLD_ANALYSIS_WIDTH, max(1, round(HOLD_ANALYSIS_WIDTH * h / w))), interpolation=cv2.INTER_AREA
        )
        if hold is None or previous is None or block_change(previous, small, hold.block) > hold.threshold:
            kept.append(frame)
        previous = small
        indices.append(frame.index)
        times.append(frame.time)
        drawing.append(len(kept) - 1)
    return kept, indices, times, drawing


def _with_provenance(inst: Instances, source: np.ndarray, keyframe_frame: np.ndarray, is_key: np.ndarray) -> Instances:
    """``inst`` labelled with where each mask came from (``source``: :class:`~celmask.tasks.core.types.Source` codes)."""
    data = dict(inst.data)
    data.update(
        source=np.asarray(source, np.int8),
        keyframe_frame=keyframe_frame.astype(np.int64),
        is_keyframe=is_key.astype(bool),
    )
    return Instances(inst.mask, inst.xyxy, inst.score, inst.class_id, inst.track_id, data)


def segment_shot(
    video: str | Path,
    shot: Shot,
    config: SegmentConfig = SegmentConfig(),
    *,
    models: Models | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ShotSegmentation:
    """Masks for every character in every frame of ``shot`` of ``video``.

    ``models``: from :func:`build_models`, reused across shots (default: borrowed for this
    shot from :func:`lend_models`). ``on_stage`` is told each stage's name as it starts
    (progress for long shots). A shot without characters gives empty Instances.
    """
    if models is None:
        with lend_models(config) as lent:
            return segment_shot(video, shot, config, models=lent, on_stage=on_stage)
    report = on_stage or (lambda _: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = seconds.get(stage, 0.0) + now - clock
        clock = now

    report("decode")
    info = probe(video)
    width, height = work_size(output_size(info, None, None), config.work_size)
    hold = HoldConfig(config.hold_threshold, config.hold_block) if config.hold_reuse else None
    kept, indices, times, drawing = unique_drawings(
        iter_frames(video, start=shot.start, end=shot.end, width=width, height=height), hold
    )
    images = [f.image for f in kept]
    still = still_size((info.height, info.width))
    stills = [cv2.resize(image, still, interpolation=cv2.INTER_AREA) for image in images]
    lap("decode")

    report("detect")
    detections = models.detector.detect(kept)
    lap("detect")

    report("track")
    tracked = keep_evidenced(assign_tracks(images, detections, config.tracks), config.evidence)
    lap("track")

    report("keyframes")
    frame_of = [f.index for f in kept]
    candidates = score_candidates(
        images, frame_of, tracked, KeyframeConfig(config.keyframe_weights, config.keyframe_neighbours)
    )
    lap("keyframes")

    keyframes: dict[int, list[Candidate]] = {}
    if models.propagator is None:
        per_drawing = []
        for inst in tracked:
            no_key = np.full(len(inst), -1, np.int64)
            detected = np.full(len(inst), Source.DETECTED)
            per_drawing.append(_with_provenance(inst, detected, no_key, np.zeros(len(inst), bool)))
    else:
        report("propagate")
        per_drawing = _propagate(
            models, images, frame_of, tracked, candidates, config.keyframe, config.propagation, keyframes
        )
        lap("propagate")

    if models.refiner is not None:
        report("refine")
        refined = models.refiner.refine(images, per_drawing)
        per_drawing = [
            Instances(
                r.mask,
                r.xyxy,
                r.score,
                r.class_id,
                r.track_id,
                {**r.data, "source": np.where(r.data["refined"], Source.REFINED, r.data["source"]).astype(np.int8)},
            )
            for r in refined
        ]
        lap("refine")

    return ShotSegmentation(
        shot=shot,
        frame_indices=np.asarray(indices, np.int64),
        times=np.asarray(times, np.float64),
        drawing=np.asarray(drawing, np.int64),
        instances=per_drawing,
        work_size=(height, width),
        source_size=(info.height, info.width),
        keyframes=keyframes,
        candidates=candidates,
        model_ids=models.ids,
        seconds={k: round(v, 4) for k, v in seconds.items()},
        stills=stills,
    )


class _Row(NamedTuple):
    track_id: int
    class_id: int
    mask: np.ndarray
    score: float
    key: int
    """Step of the keyframe the mask came from (its own step for a detection)."""
    detected: bool


def _propagate(
    models: Models,
    images: list[np.ndarray],
    frame_of: list[int],
    tracked: list[Instances],
    candidates: dict[int, list[Candidate]],
    method: str,
    config: PropagationConfig,
    keyframes: dict[int, list[Candidate]],
) -> list[Instances]:
    """Per drawing: every track's propagated mask (the keyframe's own detection at the
    keyframe), rows sorted by track id; fills ``keyframes``."""
    h, w = images[0].shape[:2] if images else (0, 0)
    rows: list[list[_Row]] = [[] for _ in images]
    with sharing(models.propagator):  # each flow once for every track
        results = {
            track_id: propagate_track(models.propagator, images, tracked, track_candidates, method, config)
            for track_id, track_candidates in sorted(candidates.items())
        }
    for track_id, result in results.items():
        keyframes[track_id] = result.keyframes
        key_row = {k: int(np.flatnonzero(tracked[k].track_id == track_id)[0]) for k in set(result.keyframe.values())}
        for step, mask in result.mask.items():
            key = result.keyframe[step]
            detected = step in result.detected
            score = tracked[key].score[key_row[key]] * (1.0 if detected else result.confidence[step])
            rows[step].append(
                _Row(track_id, int(tracked[key].class_id[key_row[key]]), mask, float(score), key, detected)
            )
    out = []
    for step, step_rows in enumerate(rows):
        if not step_rows:
            out.append(_with_provenance(Instances.empty(h, w), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool)))
            continue
        inst = Instances.from_masks(
            np.stack([r.mask for r in step_rows]),
            score=np.array([r.score for r in step_rows], np.float32),
            class_id=np.array([r.class_id for r in step_rows], np.int32),
            track_id=np.array([r.track_id for r in step_rows], np.int32),
        )
        is_key = np.array(
            [r.key == step and any(c.step == step for c in keyframes[r.track_id]) for r in step_rows], bool
        )
        keyframe_frame = np.array([frame_of[r.key] for r in step_rows], np.int64)
        source = np.array([Source.DETECTED if r.detected else Source.PROPAGATED for r in step_rows])
        out.append(_with_provenance(inst, source, keyframe_frame, is_key))
    return out
