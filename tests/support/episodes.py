"""The small segmented episode the manifest, export and report tests share, built once
per session (tests/conftest.py: ``manifest_episode``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celmask.tasks.cast.episode import compute_cast
from celmask.tasks.core.config import load_config
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.schema import ShotSummary
from celmask.tasks.manifest.write import write_episode_table, write_shot, write_success
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_sets import build_models
from celmask.tasks.segment.shot import ShotSegmentation, segment_shot
from celmask.tasks.synth import generate_episode, load_truth
from celmask.tasks.synth.unstable import UnstableConfig, write_unstable_detections
from celmask.tasks.video import probe


@dataclass(frozen=True)
class ManifestEpisode:
    """A generated 4 s episode (seed 21: shots [0, 80) and [80, 96) at 640x360) with
    exact detections, segmented and written as the complete manifest ``dir`` (OUT/ep7)."""

    dir: Path
    video: Path
    config: SegmentConfig
    fingerprint: str
    segmentations: tuple[ShotSegmentation, ...]
    summaries: tuple[ShotSummary, ...]


def build_manifest_episode(root: Path) -> ManifestEpisode:
    source = root / "video"
    generate_episode(source, seed=21, duration=4.0)
    write_unstable_detections(source, source / "d.parquet", seed=0, config=UnstableConfig(level=0.0))
    config = load_config(SegmentConfig(), None, ["detector=file", f"detector.path={source / 'd.parquet'}"])
    models = build_models(config)
    video = source / "episode.mp4"
    fingerprint = probe(video).fingerprint
    shots = [Shot(s.index, s.start, s.end, 0.0, 0.0, s.transition) for s in load_truth(source).shots]
    segs = tuple(segment_shot(video, s, config, models=models) for s in shots)
    episode = root / "out" / "ep7"
    summaries = tuple(write_shot(episode, seg, config, fingerprint) for seg in segs)
    write_episode_table(episode, list(summaries))
    cast = compute_cast(episode, video)
    write_success(episode, len(summaries), cast=cast.summary)
    return ManifestEpisode(episode, video, config, fingerprint, segs, summaries)
