"""Generated episodes on disk, made once and reused by tests, the demo and benchmarks.

An episode directory is complete only when its ``truth.json`` exists (the
generator writes it last), so a directory left by an interrupted run is simply
generated again. A real-art episode (``art``) is reused only when its ``art.json``
names the same art folder and split. Processes that ask for the same directory at once
(tests run side by side, two benchmarks) take turns on a lock beside it
(:func:`generation_lock`): the first generates, the others then reuse its episode.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from celmask.tasks.synth.realepisode import ART_NAME, art_source, generate_art_episode
from celmask.tasks.synth.render import generate_episode
from celmask.tasks.synth.truth import TRUTH_NAME, Truth, load_truth

DEFAULT_FPS = Fraction(24000, 1001)


def ensure_episode(
    out_dir: str | Path,
    *,
    seed: int,
    duration: float = 60.0,
    width: int = 640,
    height: int = 360,
    fps: Fraction = DEFAULT_FPS,
    art: str | Path | None = None,
    art_split: str | None = None,
    split_seed: int = 0,
    hard_cases: bool = False,
) -> Path:
    """Return ``out_dir`` holding the episode of these arguments, generating it
    unless a complete one with the same seed, size, rate, length and ``hard_cases`` is there; with
    ``art``, the real-art episode (:func:`~celmask.tasks.synth.realepisode.generate_art_episode`)."""
    if art is not None and hard_cases:
        raise ValueError("hard_cases are planned for generated episodes only, not with art")
    out = Path(out_dir)
    source = None if art is None else art_source(art, art_split, split_seed)
    with generation_lock(out):
        if (out / TRUTH_NAME).is_file():
            truth = load_truth(out)
            recorded = json.loads((out / ART_NAME).read_text())["source"] if (out / ART_NAME).is_file() else None
            if (
                _matches(truth, seed, duration, width, height, Fraction(fps))
                and recorded == source
                and truth.hard_cases == hard_cases
            ):
                return out
        (out / ART_NAME).unlink(missing_ok=True)
        if art is None:
            generate_episode(
                out, seed=seed, duration=duration, width=width, height=height, fps=fps, hard_cases=hard_cases
            )
        else:
            generate_art_episode(
                out,
                art,
                seed=seed,
                duration=duration,
                width=width,
                height=height,
                fps=fps,
                split=art_split,
                split_seed=split_seed,
            )
    return out


@contextmanager
def generation_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out_dir`` (waiting for whoever holds it) until the
    file closes. Not :func:`celmask.tasks.run.lock.episode_lock`: that one refuses a
    second command on an episode at once; this one makes the second wait its turn."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _matches(truth: Truth, seed: int, duration: float, width: int, height: int, fps: Fraction) -> bool:
    frames = int(round(Fraction(duration) * fps))
    return (truth.seed, truth.width, truth.height, truth.fps, truth.frame_count) == (seed, width, height, fps, frames)
