"""The ``nightly`` flow: segment every episode in an inbox that is not done yet.

    nightly  find the inbox's videos (celmask.tasks.run.inbox) -> for each one not done: fetch it
             (remote inboxes: into OUT/_inbox/, removed once the episode is complete)
             -> the ``episode`` flow as a subflow -> a table artifact of the inbox
             -> fail listing the failed episodes

Each episode is its own subflow run, so one that fails (a corrupt file, failed shots)
is one Failed child the others do not wait on or share. Deployed with
``episode_deployment`` (as ``deployments/prefect.yaml`` does), the episodes are flow runs
of that deployment instead, all submitted at once: the cpu pool's workers plan and
finish several episodes while the gpu pool segments their shots. Run it again, by schedule or
by hand: complete episodes are skipped by their ``_SUCCESS.json``, failed ones are
tried again (their good shots come back from the shot cache).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from celmask.flows.episode import artifact_slug, check_settings, episode_flow
from celmask.flows.watch import ended
from celmask.tasks.core.errors import CelmaskError, ShotsFailed
from celmask.tasks.manifest.layout import staging_dir
from celmask.tasks.run.inbox import InboxItem, fetch, find_episodes, record_source, redact

DONE_BEFORE, COMPLETE, FAILED = "done-before", "complete", "failed"

listener: ContextVar[Callable[[dict[str, str]], None] | None] = ContextVar("celmask_nightly_listener", default=None)
"""Told each inbox row (episode, status, error, source) once it is decided: the command line's output."""


def _inbox_name(inbox: str) -> str:
    return inbox.rstrip("/").rsplit("/", 1)[-1] or inbox


def _nightly_run_name() -> str:
    return f"nightly-{_inbox_name(flow_run.parameters['inbox'])}-{datetime.date.today().isoformat()}"


@task(name="fetch", task_run_name="fetch-{item.episode_id}", retries=2, retry_delay_seconds=[10.0, 60.0])
def fetch_task(item: InboxItem, staging: Path) -> Path:
    """Copy a remote video to this host (skipped when the copy is already there)."""
    return fetch(item, staging)


def _error_text(state) -> str:
    """The one-line reason of a failed subflow run."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself is unavailable
        error = exc
    if isinstance(error, CelmaskError):
        return str(error)
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return state.message or state.name


def _fetched(item: InboxItem, out: str) -> tuple[Path | None, str]:
    """The item's video on this host, or the reason there is none."""
    if item.problem:
        return None, f"{redact(item.source)}: {item.problem}"
    try:
        return (fetch_task(item, staging_dir(out)) if item.remote else fetch(item, staging_dir(out))), ""
    except CelmaskError as error:
        return None, str(error)


def _settled(item: InboxItem, video: Path, out: str, state, *, remote_run: bool = False) -> str:
    """The error of the item's finished episode run, empty when it completed
    (``remote_run``: a deployment's run, whose exception is in its state's message)."""
    if not state.is_completed():  # a remote video's copy stays for the shots run again
        return (state.message or state.name) if remote_run else _error_text(state)
    if item.remote:
        record_source(item, out)
        video.unlink(missing_ok=True)
    return ""


Decided = Callable[[InboxItem, str], None]
"""Told each item's error (empty when it completed) as soon as it is known."""


def _run_here(items: list[InboxItem], out: str, episode: dict[str, Any], decided: Decided) -> None:
    """Each item as an ``episode`` subflow of this run, one after another."""
    for item in items:
        video, error = _fetched(item, out)
        if video is not None:
            state = episode_flow(str(video), out, episode_id=item.episode_id, return_state=True, **episode)
            error = _settled(item, video, out, state)
        decided(item, error)


def _run_deployed(items: list[InboxItem], out: str, episode: dict[str, Any], deployment: str, decided: Decided) -> None:
    """Each item as a flow run of ``deployment``, all submitted, then watched to the end.
    A run that crashed (its worker or the server lost) is submitted again once
    (:func:`~celmask.flows.watch.ended`): its finished shots come back from the shot cache."""
    from prefect.deployments import run_deployment

    def fetched() -> Iterator[tuple[InboxItem, Path]]:
        for item in items:
            video, error = _fetched(item, out)
            if video is None:
                decided(item, error)
            else:
                yield item, video

    def submit(episode_of: tuple[InboxItem, Path], attempt: int):
        item, video = episode_of
        return run_deployment(
            deployment,
            timeout=0,
            flow_run_name=f"ep-{item.episode_id}",
            parameters=dict(video=str(video), out=out, episode_id=item.episode_id, **episode),
            tags=[f"episode:{item.episode_id}", "pool:cpu"],
            idempotency_key=f"{flow_run.id}-{item.episode_id}" + (f"-{attempt}" if attempt else ""),
        ).id

    for (item, video), state in ended(fetched(), submit):
        decided(item, _settled(item, video, out, state, remote_run=True))


@flow(name="nightly", flow_run_name=_nightly_run_name)
def nightly_flow(
    inbox: str,
    out: str,
    config: dict[str, Any] | None = None,
    workers: int = 2,
    shot_deployment: str | None = None,
    gpu_limit: str | None = None,
    episode_deployment: str | None = None,
) -> dict[str, Any]:
    """Segment every video in ``inbox`` (a folder or an fsspec URL) not yet complete in
    ``OUT/<episode_id>/``, each as an ``episode`` subflow run with ``config``, ``workers``,
    ``shot_deployment`` and ``gpu_limit`` (see ``episode``), or, with
    ``episode_deployment`` (e.g. ``episode/episode``), as flow runs of that deployment
    running at once.

    Returns ``{"complete": [ids], "skipped": [ids done before], "failed": {id: error}}``;
    when any failed, raises :class:`ShotsFailed` listing them once every other has run.
    """
    settings = check_settings(config)  # a bad setting fails here, not once per episode
    if workers < 1:
        raise CelmaskError("workers", f"must be >= 1, got {workers}")
    items = find_episodes(inbox, out)
    tell = listener.get()
    rows: list[dict[str, str]] = []
    summary: dict[str, Any] = {"complete": [], "skipped": [], "failed": {}}

    def decided(item: InboxItem, error: str, status: str = "") -> None:
        status = status or (FAILED if error else COMPLETE)
        if status == FAILED:
            summary["failed"][item.episode_id] = error
        else:
            summary["skipped" if status == DONE_BEFORE else "complete"].append(item.episode_id)
        rows.append({"episode": item.episode_id, "status": status, "error": error, "source": redact(item.source)})
        if tell:
            tell(rows[-1])

    for item in items:
        if item.done:
            decided(item, "", DONE_BEFORE)
    todo = [item for item in items if not item.done]
    episode = dict(config=settings, workers=workers, shot_deployment=shot_deployment, gpu_limit=gpu_limit)
    if episode_deployment:
        _run_deployed(todo, out, episode, episode_deployment, decided)
    else:
        _run_here(todo, out, episode, decided)
    order = {item.episode_id: n for n, item in enumerate(items)}
    rows.sort(key=lambda row: order[row["episode"]])
    summary["complete"].sort(key=order.__getitem__)
    summary["failed"] = dict(sorted(summary["failed"].items(), key=lambda kv: order[kv[0]]))
    create_table_artifact(
        rows or [{"episode": "", "status": "", "error": "no videos in the inbox", "source": redact(inbox)}],
        key=f"nightly-{artifact_slug(_inbox_name(inbox))}",
        description=f"nightly run of {redact(inbox)}",
    )
    failed = summary["failed"]
    if failed:
        first = next(iter(failed))
        raise ShotsFailed(
            inbox,
            f"{len(failed)} of {len(items)} episodes failed: {', '.join(failed)} "
            f"(first: {failed[first]}); the others are written",
            "see the table artifact of this run; fix or remove those videos and run nightly again "
            "(complete episodes are skipped)",
        )
    return summary
