"""Synthetic anime episodes with ground truth: celmask's test, demo and benchmark data.

Real labelled anime cannot be downloaded, so :func:`generate_episode` renders
episodes that have what breaks naive pipelines: painted sets and flat-shaded,
outlined characters that move, occlude each other, enter and leave; a camera that
pans, zooms and shakes; animation on 2s/3s and long holds; flashes; cuts, fades and
dissolves; burnt-in subtitles. Everything is deterministic in the seed::

    from celmask.tasks.synth import generate_episode, load_truth, iter_truth_masks

    truth = generate_episode("/tmp/ep7", seed=7, duration=60.0)   # ~1439 frames at 640x360
    truth = load_truth("/tmp/ep7")                                # the same, from truth.json
    for frame, track_ids, masks in iter_truth_masks("/tmp/ep7", 100, 148):
        ...

Modules: :mod:`~celmask.tasks.synth.timeline` (the episode plan from a seed: shots,
transitions, flashes, subtitles), :mod:`~celmask.tasks.synth.staging` (per shot: drawings and
holds, camera, character paths and poses), :mod:`~celmask.tasks.synth.characters` (designs
and poses), :mod:`~celmask.tasks.synth.sprites` (drawing a pose into an RGBA sprite and its
mask; reusable for cut-out composites), :mod:`~celmask.tasks.synth.backgrounds` (painted
sets, camera), :mod:`~celmask.tasks.synth.render` (frames, encoding, truth),
:mod:`~celmask.tasks.synth.truth` (truth files), :mod:`~celmask.tasks.video.encoding` (the ffmpeg pipe it writes through),
:mod:`~celmask.tasks.synth.realepisode` (the same episodes acted by real cut-outs on real
backgrounds: ``generate_art_episode(out, "../shared/realart", seed=3, split="test")``),
:mod:`~celmask.tasks.synth.edits` (the editing that fools shot detectors, with ``hard_cases=True``).

Output of :func:`generate_episode` in ``out_dir``: ``episode.mp4`` (H.264 yuv420p,
crf 18), ``masks.parquet`` (one row per frame and visible character, COCO RLE) and,
written last, ``truth.json`` (shots, transitions, flashes, holds); see
:mod:`celmask.tasks.synth.truth` for the conventions.
"""

from celmask.tasks.core.rle import decode_mask
from celmask.tasks.synth.render import RenderedFrame, background_plate, generate_episode, render_frames
from celmask.tasks.synth.timeline import EpisodePlan, plan_timeline
from celmask.tasks.synth.truth import (
    EpisodeTruthFlash,
    EpisodeTruthShot,
    EpisodeTruthTrack,
    Truth,
    iter_truth_masks,
    load_truth,
)

__all__ = [
    "EpisodePlan",
    "EpisodeTruthFlash",
    "EpisodeTruthShot",
    "EpisodeTruthTrack",
    "RenderedFrame",
    "Truth",
    "background_plate",
    "decode_mask",
    "generate_episode",
    "iter_truth_masks",
    "load_truth",
    "plan_timeline",
    "render_frames",
]
