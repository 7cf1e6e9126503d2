"""The ``nightly`` flow: segment every episode in an inbox that is not done yet.

    nightly  find the inbox's videos (celmask.tasks.run.inbox) -> for each one not done: fetch it
             (remote inboxes: into OUT/_inbox/, removed once the episode is complete)
             -> the ``episode`` flow as a subflow -> a table artifact of the inbox
             -> fail listing the failed episodes

Each episode is its own subflow run, so one that fails (a corrupt file, failed shots)
is one Failed child the others do not wait on or share. Run it again, by schedule or
by hand: complete episodes are skipped by their ``_SUCCESS.json``, failed ones are
tried again (their good shots come back from the shot cache).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from celmask.flows.episode import artifact_slug, check_settings, episode_flow
from celmask.tasks.core.errors import CelmaskError, ShotsFailed
from celmask.tasks.manifest.layout import staging_dir
from celmask.tasks.run.inbox import InboxItem, fetch, find_episodes, record_source

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


def _run_one(
    item: InboxItem, out: str, config: dict[str, Any], workers: int, shot_deployment: str | None, gpu_limit: str | None
) -> str:
    """Segment one inbox item; return the error, empty when it completed."""
    if item.problem:
        return f"{item.source}: {item.problem}"
    try:
        video = fetch_task(item, staging_dir(out)) if item.remote else fetch(item, staging_dir(out))
    except CelmaskError as error:
        return str(error)
    state = episode_flow(
        str(video),
        out,
        config,
        episode_id=item.episode_id,
        workers=workers,
        shot_deployment=shot_deployment,
        gpu_limit=gpu_limit,
        return_state=True,
    )
    if not state.is_completed():
        return _error_text(state)  # a remote video's copy stays for the shots run again
    if item.remote:
        record_source(item, out)
        video.unlink(missing_ok=True)
    return ""


@flow(name="nightly", flow_run_name=_nightly_run_name)
def nightly_flow(
    inbox: str,
    out: str,
    config: dict[str, Any] | None = None,
    workers: int = 2,
    shot_deployment: str | None = None,
    gpu_limit: str | None = None,
) -> dict[str, Any]:
    """Segment every video in ``inbox`` (a folder or an fsspec URL) not yet complete in
    ``OUT/<episode_id>/``, each as an ``episode`` subflow run with ``config``, ``workers``,
    ``shot_deployment`` and ``gpu_limit`` (see ``episode``).

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
    for item in items:
        if item.done:
            summary["skipped"].append(item.episode_id)
            error, status = "", DONE_BEFORE
        else:
            error = _run_one(item, out, settings, workers, shot_deployment, gpu_limit)
            status = FAILED if error else COMPLETE
            if error:
                summary["failed"][item.episode_id] = error
            else:
                summary["complete"].append(item.episode_id)
        rows.append({"episode": item.episode_id, "status": status, "error": error, "source": item.source})
        if tell:
            tell(rows[-1])
    create_table_artifact(
        rows or [{"episode": "", "status": "", "error": "no videos in the inbox", "source": inbox}],
        key=f"nightly-{artifact_slug(_inbox_name(inbox))}",
        description=f"nightly run of {inbox}",
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
