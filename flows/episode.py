"""The ``episode`` and ``segment-shot`` flows: a whole episode, and one shot of it.

    episode       plan (probe, shots) -> one segment-shot per shot -> finish
                  (episode table, _SUCCESS.json when every shot is good, QC report)
    segment-shot  segment one shot and write its manifest file

Two ways to run one code path. Embedded (``celmask run``, no server): shots are
``segment-shot`` tasks on a local thread pool. Deployed (``shot_deployment`` set, as
``deployments/prefect.yaml`` does): each shot is a flow run of the ``segment-shot``
deployment on the GPU pool, so a failed shot is one flow run an operator retries
alone; when a retried shot completes it finishes the episode again, so the parent
run staying Failed never leaves the episode unfinished. Either way the work is
:func:`celmask.tasks.run.shot.run_shot`, and the episode's state is read back from the
output directory (``OUT/<episode_id>/_run/``), shared by every host.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import re
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.runtime import flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from celmask.flows import progress as progress_module
from celmask.flows.progress import EpisodeProgress
from celmask.flows.watch import ended
from celmask.tasks.core.config import apply
from celmask.tasks.core.errors import CelmaskError, ShotsFailed, is_transient
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.layout import sheet_path
from celmask.tasks.run.finish import EpisodeResult, finish_episode
from celmask.tasks.run.lock import episode_lock
from celmask.tasks.run.plan import (
    EpisodePlan,
    episode_id_of,
    load_plan,
    plan_episode,
    shot_config_of,
    split_settings,
)
from celmask.tasks.run.shot import Faults, ShotOutcome, run_shot
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_files import check_model_files
from celmask.tasks.segment.model_sets import preload_models

SHOT_RETRIES = 2
SHOT_RETRY_DELAYS = [10.0, 60.0]
"""Seconds before each retry of a shot that failed transiently (jittered by half)."""
GPU_LEASE_SECONDS = 60.0
"""A shot's ``gpu`` slot is a lease it renews while it works: when its worker is lost
the slot is free again about this long after (Prefect's default is 300 s)."""


def artifact_slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "episode"


def check_settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` checked now (a bad key, or a model file from a directory the worker does
    not allow, fails the run before any work), as given: segmentation settings and shot
    detection's (``shots.*``)."""
    segment, _ = split_settings(config or {})
    check_model_files(apply(SegmentConfig(), segment, where="config"))
    shot_config_of(config or {})
    return dict(config or {})


# --------------------------------------------------------------------------- one shot


def _retry_transient(task, task_run, state) -> bool:
    """Retry a shot only when its failure may pass (GPU memory, a lost connection)."""
    try:
        state.result()
    except Exception as error:  # the failure itself
        return is_transient(error) or _server_away(error)
    return False


def _server_away(error: Exception) -> bool:
    """A GPU slot not had because the server did not answer (it or its database was
    restarting), rather than because the limit is missing."""
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    cause = error.__cause__
    if not isinstance(error, ConcurrencySlotAcquisitionError) or cause is None:
        return False
    return not isinstance(cause, httpx.HTTPStatusError) or cause.response.status_code >= 500


def _shot_markdown(episode_id: str, outcome: ShotOutcome, thumbnail: bytes | None) -> str:
    s = outcome.summary
    shot = s.shot
    lines = [
        f"### ep-{episode_id} shot {shot.index}",
        f"frames {shot.start}–{shot.end - 1} ({shot.start_time:.2f}–{shot.end_time:.2f} s, {shot.transition}); "
        f"{s.drawings} unique drawings, {s.tracks} tracks, {s.rows} masks; "
        + ("already in the manifest (cached)" if outcome.cached else f"{sum(s.seconds.values()):.1f} s"),
        "",
    ]
    if thumbnail:
        lines += [f"![contact sheet](data:image/jpeg;base64,{base64.b64encode(thumbnail).decode()})", ""]
    if s.keyframes:
        lines += ["| track | keyframe | score |", "|---:|---:|---:|"]
        lines += [f"| {k.track_id} | {k.frame_index} | {k.score:.3f} |" for k in s.keyframes]
    return "\n".join(lines)


def _publish_shot(episode_dir: Path, outcome: ShotOutcome) -> None:
    """The shot's markdown artifact: facts, keyframe scores, its contact sheet inline."""
    summary = outcome.summary
    sheet = sheet_path(episode_dir, summary.shot.index)
    thumbnail = sheet.read_bytes() if sheet.exists() else None
    create_markdown_artifact(
        _shot_markdown(episode_dir.name, outcome, thumbnail),
        key=f"{artifact_slug(episode_dir.name)}-shot-{summary.shot.index}",
        description=f"ep-{episode_dir.name} shot {summary.shot.index}",
    )


@task(
    name="segment-shot",
    task_run_name="shot-{shot.index}",
    retries=SHOT_RETRIES,
    retry_delay_seconds=SHOT_RETRY_DELAYS,
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def shot_task(
    video: str,
    shot: Shot,
    episode_dir: str,
    settings: dict[str, Any],
    faults: dict[str, Any] | None = None,
    gpu_limit: str | None = None,
    force: bool = False,
) -> ShotOutcome:
    """One shot, holding a slot of the ``gpu_limit`` global concurrency limit while its
    models are built and run (a shot found done takes none)."""
    injected = Faults.from_dict(faults)
    # A transient fault passes on a task retry; bad input only on a new run of the flow.
    attempt = task_run.run_count if injected.transient else flow_run.run_count
    slot = functools.partial(_compute_slot, gpu_limit)
    outcome = run_shot(video, shot, episode_dir, settings, force=force, faults=injected, attempt=attempt, slot=slot)
    _publish_shot(Path(episode_dir), outcome)
    return outcome


_local_slot: ContextVar[threading.BoundedSemaphore | None] = ContextVar("celmask_local_slot", default=None)
"""Shots segmenting at once in this process (embedded runs); see :func:`_run_local`."""


@contextlib.contextmanager
def _compute_slot(gpu_limit: str | None) -> Iterator[None]:
    with _local_slot.get() or contextlib.nullcontext(), _gpu_slot(gpu_limit):
        held = time.time()
        try:
            yield
        finally:
            if gpu_limit:
                _log_slot_held(gpu_limit, held, time.time())


SLOT_LOG = "held a slot of {limit} from {start} to {end}"
"""The shot run's log line for its GPU slot, times in UTC ISO format: read inside the
slot, so the intervals of a night show how many shots held one at once."""


def _log_slot_held(limit: str, start: float, end: float) -> None:
    from prefect.logging import get_run_logger

    iso = functools.partial(datetime.datetime.fromtimestamp, tz=datetime.UTC)
    get_run_logger().info(SLOT_LOG.format(limit=limit, start=iso(start).isoformat(), end=iso(end).isoformat()))


def _gpu_slot(name: str | None):
    if not name:
        return contextlib.nullcontext()
    from prefect.concurrency.sync import concurrency

    return concurrency(name, occupy=1, strict=True, lease_duration=GPU_LEASE_SECONDS)


def _shot_run_name() -> str:
    p = flow_run.parameters
    return f"ep-{episode_id_of(p['video'], p.get('episode_id'))}-shot-{p['shot']['index']}"


@flow(name="segment-shot", flow_run_name=_shot_run_name)
def segment_shot_flow(
    video: str,
    shot: dict[str, Any],
    out: str,
    config: dict[str, Any] | None = None,
    episode_id: str | None = None,
    faults: dict[str, Any] | None = None,
    gpu_limit: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Segment ``shot`` (a shot of the episode's plan, as a dict) of ``video`` into
    ``OUT/<episode_id>/shots/``. On a retry of this run, finish the episode again, so
    that once the last failed shot is good the episode is complete."""
    episode_dir = Path(out) / episode_id_of(video, episode_id)
    segment, _ = split_settings(check_settings(config))
    outcome = shot_task(video, Shot(**shot), str(episode_dir), segment, faults, gpu_limit, force)
    if flow_run.run_count > 1:
        with contextlib.suppress(CelmaskError):
            finish_episode(episode_dir, load_plan(episode_dir))
    return outcome.summary.to_dict()


# --------------------------------------------------------------------------- the episode


@task(name="plan", task_run_name="plan")
def plan_task(video: str, episode_dir: Path, settings: dict[str, Any]) -> EpisodePlan:
    """Probe and detect shots (reused from an earlier run of the same content) with the
    ``shots.*`` settings."""
    return plan_episode(video, episode_dir, split_settings(settings)[0], shot_config_of(settings))[0]


@task(name="finish", task_run_name="finish")
def finish_task(episode_dir: Path, plan: EpisodePlan) -> EpisodeResult:
    return finish_episode(episode_dir, plan)


class _Progress:
    """Console listener and the run's progress artifact, told after every shot."""

    def __init__(self, plan: EpisodePlan) -> None:
        self.state = EpisodeProgress(plan.episode_id, len(plan.shots), plan.frame_count)
        self.artifact = create_progress_artifact(
            0.0, key=f"{artifact_slug(plan.episode_id)}-progress", description=f"ep-{plan.episode_id}: shots done"
        )
        self.listener = progress_module.listener.get()
        if self.listener:
            self.listener(self.state)

    def shot_finished(self, shot: Shot, *, ok: bool, cached: bool) -> None:
        self.state.shot_finished(shot.frame_count, ok=ok, cached=cached)
        update_progress_artifact(self.artifact, 100.0 * self.state.fraction, description=self.state.describe())
        if self.listener:
            self.listener(self.state)


def _run_local(
    plan: EpisodePlan,
    episode_dir: Path,
    settings: dict[str, Any],
    faults: dict[str, Any] | None,
    workers: int,
    progress: _Progress,
) -> None:
    """Shots as tasks on a local thread pool."""
    # Ultralytics is imported before threads race to import it.
    preload_models(apply(SegmentConfig(), settings))
    # One thread more than shots at once: starting a task run takes Prefect a second or
    # two of Python on a busy machine, so the next shot's run starts while the others
    # work and waits for a slot, instead of a slot standing idle while it starts.
    token = _local_slot.set(threading.BoundedSemaphore(workers))
    try:
        with ThreadPoolTaskRunner(max_workers=workers + 1) as runner:
            futures = {
                runner.submit(
                    shot_task,
                    parameters=dict(
                        video=plan.video, shot=shot, episode_dir=str(episode_dir), settings=settings, faults=faults
                    ),
                ): shot
                for shot in plan.work_order
            }
            for future in as_completed(list(futures)):
                shot = futures[future]
                result = future.result(raise_on_failure=False)
                ok = isinstance(result, ShotOutcome)
                progress.shot_finished(shot, ok=ok, cached=ok and result.cached)
    finally:
        _local_slot.reset(token)


def _run_deployed(
    plan: EpisodePlan,
    out: str,
    config: dict[str, Any],
    faults: dict[str, Any] | None,
    shot_deployment: str,
    gpu_limit: str | None,
    progress: _Progress,
) -> None:
    """Shots as flow runs of ``shot_deployment``, all submitted, then watched to the end.
    A run that crashed (lost worker) is submitted again once (:func:`~celmask.flows.watch.ended`),
    without injected faults; a failed one stays failed."""
    from prefect.deployments import run_deployment

    parent = flow_run.id

    def submit(shot: Shot, attempt: int):
        return run_deployment(
            shot_deployment,
            timeout=0,
            flow_run_name=f"ep-{plan.episode_id}-shot-{shot.index}",
            parameters=dict(
                video=plan.video,
                shot=shot.to_dict(),
                out=out,
                config=config,
                episode_id=plan.episode_id,
                faults=faults if attempt == 0 else None,
                gpu_limit=gpu_limit,
            ),
            tags=[f"episode:{plan.episode_id}", f"shot:{shot.index}", "pool:gpu"],
            idempotency_key=f"{parent}-{plan.episode_id}-shot-{shot.index}-{attempt}",
        ).id

    for shot, state in ended(plan.work_order, submit):
        progress.shot_finished(shot, ok=state.is_completed(), cached=False)


def _tag_this_run(*names: str) -> None:
    """Add tags to the running flow run itself (``tags()`` only reaches what it starts),
    so the UI filters a deployment's runs by episode."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted(set(run.tags) | set(names)))


def _episode_run_name() -> str:
    p = flow_run.parameters
    return f"ep-{episode_id_of(p['video'], p.get('episode_id'))}"


def _ran_on(where: dict[str, str]) -> str:
    """``host device`` and the worker's pinned GPUs, for the table of shots."""
    pinned = where.get("cuda_visible_devices")
    return " ".join(filter(None, (where.get("host"), where.get("device"), pinned and f"CUDA_VISIBLE_DEVICES={pinned}")))


def _shots_table(result: EpisodeResult) -> list[dict[str, Any]]:
    rows = []
    for s in result.summaries:
        main = {}
        for k in s.keyframes:
            main.setdefault(k.track_id, k.score)
        rows.append(
            {
                "shot": s.shot.index,
                "frames": f"{s.shot.start}-{s.shot.end - 1}",
                "transition": s.shot.transition,
                "status": s.status,
                "tracks": s.tracks,
                "drawings": s.drawings,
                "keyframe scores": " ".join(f"{v:.2f}" for v in main.values()),
                "seconds": round(sum(s.seconds.values()), 1),
                "ran on": _ran_on(s.ran_on),
                "error": s.error,
            }
        )
    return rows


@flow(name="episode", flow_run_name=_episode_run_name)
def episode_flow(
    video: str,
    out: str,
    config: dict[str, Any] | None = None,
    episode_id: str | None = None,
    workers: int = 2,
    shot_deployment: str | None = None,
    gpu_limit: str | None = None,
    faults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment every shot of ``video`` into ``OUT/<episode_id>/`` (episode id: the file's
    stem by default) with ``config`` (flat dotted settings, see ``celmask config``).

    ``workers``: shots segmented at once in this process (embedded). ``shot_deployment``
    (e.g. ``segment-shot/segment-shot``): run each shot as a flow run of that deployment
    instead, holding a slot of the ``gpu_limit`` global concurrency limit. ``faults``:
    failures injected on purpose (:class:`celmask.tasks.run.shot.Faults`). Fails, after every
    shot has finished, with the list of failed shots.
    """
    episode_dir = Path(out) / episode_id_of(video, episode_id)
    settings = check_settings(config)
    if Faults.from_dict(faults).crash and not shot_deployment:
        raise CelmaskError(
            "faults",
            "crash ends the process that runs the shot, here this whole run",
            "inject crashes into deployed runs (shot_deployment) only",
        )
    if workers < 1:
        raise CelmaskError("workers", f"must be >= 1, got {workers}")
    with episode_lock(episode_dir, "episode flow"):  # one run at a time writes the episode
        # The run itself carries the episode's tag; its task runs do not: a tagged task run
        # asks the server for tag concurrency slots as it starts and ends (two requests each).
        _tag_this_run(f"episode:{episode_dir.name}")
        plan = plan_task(video, episode_dir, settings)
        progress = _Progress(plan)
        segment, _ = split_settings(settings)  # what the shots are segmented with
        if shot_deployment:
            _run_deployed(plan, out, segment, faults, shot_deployment, gpu_limit, progress)
        else:
            _run_local(plan, episode_dir, segment, faults, workers, progress)
        result = finish_task(episode_dir, plan)
        create_table_artifact(
            _shots_table(result),
            key=f"{artifact_slug(plan.episode_id)}-shots",
            description=f"ep-{plan.episode_id}: every shot",
        )
        if result.failed:
            first = next(s for s in result.summaries if s.status != "ok")
            written = "the others are written" if len(result.failed) < len(plan.shots) else "so none is written"
            raise ShotsFailed(
                episode_dir,
                f"shots {result.failed} of {len(plan.shots)} failed, {written} (first failure: {first.error})",
                f"see {result.report}; re-run one with `celmask rerun {episode_dir} --shot N`",
            )
        if result.success is None:
            raise CelmaskError(episode_dir, f"not complete: {result.problem}", "run `celmask validate` on it")
        return {
            "episode_dir": str(episode_dir),
            "report": str(result.report),
            "shots": len(plan.shots),
            "cached": progress.state.cached,
            "frames": plan.frame_count,
            "success": result.success,
        }
