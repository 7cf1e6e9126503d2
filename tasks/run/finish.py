"""Close an episode run: its table, its cast (who every track is across the episode,
:mod:`celmask.tasks.cast.episode`), its ``_SUCCESS.json`` (only when every shot is
good), its QC report.

Run at the end of every episode run, and again whenever a failed shot has been
re-run on its own (``celmask finalize``, ``celmask rerun``, a retried shot flow): the
episode's state is read back from the output directory, so it does not matter which
run, process or host produced each shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celmask.tasks.cast.episode import compute_cast
from celmask.tasks.core.atomic import remove_durably
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import SUCCESS_NAME, shots_dir, success_path
from celmask.tasks.manifest.schema import ShotSummary
from celmask.tasks.manifest.write import write_episode_table, write_success
from celmask.tasks.outputs.report import write_report
from celmask.tasks.run.plan import EpisodePlan
from celmask.tasks.run.shot import recorded_summaries


@dataclass(frozen=True)
class EpisodeResult:
    episode_dir: Path
    summaries: list[ShotSummary]
    report: Path
    success: dict[str, Any] | None
    """The content of ``_SUCCESS.json``; None when the episode is not complete."""
    problem: str = ""
    """Why it is not complete."""

    @property
    def failed(self) -> list[int]:
        return [s.shot.index for s in self.summaries if s.status != "ok"]


def finish_episode(episode_dir: str | Path, plan: EpisodePlan) -> EpisodeResult:
    """Write the episode table and QC report from the recorded shot results, and
    ``_SUCCESS.json`` when every shot of ``plan`` is written and valid (a stale one is
    removed otherwise)."""
    episode_dir = Path(episode_dir)
    shots_dir(episode_dir).mkdir(
        parents=True, exist_ok=True
    )  # when every shot failed it is still an episode: its report says why
    summaries = recorded_summaries(episode_dir, plan.shots)
    write_episode_table(episode_dir, summaries, video_damage=plan.video_damage)
    cast = compute_cast(episode_dir, plan.unchanged_video)
    success, problem = None, ""
    failed = [s.shot.index for s in summaries if s.status != "ok"]
    if failed:
        (episode_dir / SUCCESS_NAME).unlink(missing_ok=True)
        problem = f"shots {failed} failed"
    else:
        try:
            success = write_success(
                episode_dir,
                len(plan.shots),
                shot_detection={"config": plan.shot_config, "learned": plan.shot_learned},
                cast=cast.summary,
                video_damage=plan.video_damage,
            )
        except CelmaskError as error:
            problem = error.problem
    try:
        report = write_report(episode_dir, plan.unchanged_video)
    except OSError:  # a failed command leaves no complete-looking episode (a full disk)
        remove_durably(success_path(episode_dir))
        raise
    return EpisodeResult(episode_dir, summaries, report, success, problem)
