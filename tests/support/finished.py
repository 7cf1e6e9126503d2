"""A small finished episode for the fault tests to damage, and running ``celmask`` as a
subprocess the way a user does."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CELMASK = str(Path(sys.executable).with_name("celmask"))
SETTINGS = {"work_size": 320}
"""Small frames: each of the two shots segments in a few seconds."""
EPISODE = "ep"


@dataclass(frozen=True)
class Finished:
    video: Path
    out: Path
    settings: dict
    shots: dict[str, bytes]
    """Shot file name -> bytes of the good run."""

    @property
    def episode(self) -> Path:
        return self.out / EPISODE


def shot_bytes(episode: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((episode / "shots").glob("*.parquet"))}


def finished_episode(root: Path) -> Finished:
    """Seed 2, 4 s at 320x180, segmented and finished in this process as the episode
    flow does it, without Prefect (~25 s on two cores): two shots, 41 and 55 frames."""
    from celmask.tasks.run.finish import finish_episode
    from celmask.tasks.run.plan import plan_episode
    from celmask.tasks.run.shot import run_shot
    from celmask.tasks.synth import generate_episode

    generate_episode(root / "src", seed=2, duration=4.0, width=320, height=180)
    video, episode = root / "src" / "episode.mp4", root / "out" / EPISODE
    plan, _ = plan_episode(video, episode, SETTINGS)
    for shot in plan.shots:
        run_shot(video, shot, episode, SETTINGS)
    assert finish_episode(episode, plan).success is not None
    return Finished(video, root / "out", SETTINGS, shot_bytes(episode))


def celmask(
    env: dict[str, str], *args: str | Path, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CELMASK, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The command's one error line, ``celmask: error: ...``, last on stderr after any
    progress lines (indented), with no traceback or other message."""
    every = [line for line in done.stderr.splitlines() if line.strip()]
    lines = [line for line in every if not line.startswith("    ")]
    assert len(lines) == 1 and lines[0].startswith("celmask: error: ") and every[-1] == lines[0], done.stderr[-4000:]
    return lines[0]
