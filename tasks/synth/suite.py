"""Generated episodes on disk, made once and reused by tests, the demo and benchmarks.

An episode directory is complete only when its ``truth.json`` exists (the
generator writes it last), so a directory left by an interrupted run is simply
generated again.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

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
) -> Path:
    """Return ``out_dir`` holding the episode of these arguments, generating it
    unless a complete one with the same seed, size, rate and length is there."""
    out = Path(out_dir)
    if (out / TRUTH_NAME).is_file():
        truth = load_truth(out)
        if _matches(truth, seed, duration, width, height, Fraction(fps)):
            return out
    generate_episode(out, seed=seed, duration=duration, width=width, height=height, fps=fps)
    return out


def _matches(truth: Truth, seed: int, duration: float, width: int, height: int, fps: Fraction) -> bool:
    frames = int(round(Fraction(duration) * fps))
    return (truth.seed, truth.width, truth.height, truth.fps, truth.frame_count) == (seed, width, height, fps, frames)
