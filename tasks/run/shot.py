"""One shot of an episode run: segment it and write its manifest file, unless the
manifest already holds exactly that result.

The cache key is content, never paths: the video's fingerprint, the shot's frame
range, the settings (but where the model files are) and every model's weight checksum. The shot file carries
all four in its metadata, and ``_run/shot_NNNN.json`` beside the plan carries the
shot's summary (keyframe scores, timings), so a second run of a finished episode
reads two small files per shot and loads no frames; a changed setting or new weights
recompute. Hand corrections (``_corrections/``, :mod:`celmask.tasks.run.correct`) are
part of the key: the shot file records those it holds, and a recomputed shot applies
them again. The summary file is also how a shot run on another host reports back to
the episode flow: both see the same output directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celmask.models.device import auto_device
from celmask.tasks.core.atomic import remove_durably, write_atomic
from celmask.tasks.core.config import apply, config_json
from celmask.tasks.core.errors import CelmaskError, TransientError
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.layout import episode_table, shot_path, success_path, summary_path
from celmask.tasks.manifest.schema import ShotSummary, read_shot_meta
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_sets import lend_models, model_ids
from celmask.tasks.segment.shot import segment_shot
from celmask.tasks.video import probe


@dataclass(frozen=True)
class ShotOutcome:
    summary: ShotSummary
    cached: bool
    """True when the manifest already held this result and no model ran."""


CRASH_STATUS = 70
"""Exit status of a shot process ended by an injected crash."""


@dataclass(frozen=True)
class Faults:
    """Failures injected on purpose, to rehearse what operators do when shots fail.

    Not a segmentation setting: it never reaches the manifest or its hash, so a shot
    that failed by injection and was re-run gives the same bytes as a clean run.
    """

    shots: tuple[int, ...] = ()
    """Shot indices that fail."""
    attempts: int = 1
    """How many attempts of each fail (the next one succeeds)."""
    transient: bool = False
    """Fail as a transient fault (retried automatically with backoff) instead of as bad input."""
    crash: tuple[int, ...] = ()
    """Shot indices whose process ends at once, as when a worker is lost mid-shot
    (deployed shots only: an embedded run would end with it)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Faults:
        d = d or {}
        unknown = set(d) - {"shots", "attempts", "transient", "crash"}
        if unknown:
            raise CelmaskError("faults", f"unknown keys {sorted(unknown)}", "use shots, attempts, transient, crash")
        return cls(
            tuple(int(s) for s in d.get("shots", ())),
            int(d.get("attempts", 1)),
            bool(d.get("transient", False)),
            tuple(int(s) for s in d.get("crash", ())),
        )

    def check(self, shot: int, attempt: int) -> None:
        """Raise the injected failure for ``shot`` on its ``attempt`` (1-based), if any."""
        if shot in self.crash:
            os._exit(CRASH_STATUS)
        if shot in self.shots and attempt <= self.attempts:
            kind = TransientError if self.transient else CelmaskError
            raise kind(
                f"shot {shot}",
                f"injected {'transient ' if self.transient else ''}failure (attempt {attempt} of "
                f"{self.attempts} that fail)",
                "this is a rehearsal: retry the shot",
            )


def read_summary(episode_dir: str | Path, shot: Shot) -> ShotSummary | None:
    """The recorded summary of ``shot`` (ok or failed), or None when there is none or it
    belongs to another shot range."""
    try:
        summary = ShotSummary.from_dict(json.loads(summary_path(episode_dir, shot.index).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return summary if summary.shot == shot else None


def ran_on(config: SegmentConfig) -> dict[str, str]:
    """Where this process segments (:attr:`ShotSummary.ran_on`): host, the models' device,
    and the GPUs its worker pinned it to."""
    device = auto_device() if config.device == "auto" else config.device
    return {
        "host": socket.gethostname(),
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


def write_summary(episode_dir: Path, summary: ShotSummary) -> None:
    """Record ``summary`` as the shot's (``_run/shot_NNNN.json``), atomically: what the
    episode's finish step and a later run's cache check read."""
    path = summary_path(episode_dir, summary.shot.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(summary.to_dict(), sort_keys=True) + "\n").encode())


FILE_SETTINGS = frozenset({"detector.weights", "detector.path", "propagator.weights", "refiner.checkpoint"})
"""Settings that say where a model's file is. The model ids carry the files' content,
so these stay out of the cache key: moved weights are no reason to recompute."""


def settings_key(config: SegmentConfig) -> str:
    """The settings part of the cache key: every setting but :data:`FILE_SETTINGS`."""
    return _settings_key(config_json(config))


def _settings_key(recorded_json: str) -> str:
    settings = {k: v for k, v in json.loads(recorded_json).items() if k not in FILE_SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cached_summary(
    episode_dir: Path, shot: Shot, fingerprint: str, settings: str, model_ids: dict[str, str]
) -> ShotSummary | None:
    """The summary of ``shot`` when its file was written from this content (``settings``:
    :func:`settings_key`), else None."""
    summary = read_summary(episode_dir, shot)
    path = shot_path(episode_dir, shot.index)
    if summary is None or summary.status != "ok" or not path.exists():
        return None
    try:
        meta = read_shot_meta(path)
    except CelmaskError:
        return None
    same = (
        meta.episode_id == episode_dir.name
        and meta.video_fingerprint == fingerprint
        and (meta.shot.start, meta.shot.end) == (shot.start, shot.end)
        and _settings_key(meta.config_json) == settings
        and meta.models == model_ids
    )
    return summary if same else None


def withdraw_claims(episode_dir: Path, index: int) -> None:
    """Before shot ``index``'s result changes: the episode no longer claims to be
    complete (``_SUCCESS.json``, the episode table) nor the shot to be done (its
    summary), so a run that dies from here on leaves an episode that is plainly
    incomplete, whichever of the shot's files are there. Finishing the episode writes
    the claims again from what is on disk."""
    remove_durably(success_path(episode_dir), episode_table(episode_dir), summary_path(episode_dir, index))


def run_shot(
    video: str | Path,
    shot: Shot,
    episode_dir: str | Path,
    settings: dict[str, Any],
    *,
    force: bool = False,
    faults: Faults = Faults(),
    attempt: int = 1,
    slot: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> ShotOutcome:
    """Segment ``shot`` of ``video`` with ``settings`` (flat dotted keys) into
    ``episode_dir``'s manifest, or return the recorded result when the content key
    matches (``force``: recompute anyway). ``faults`` fail it on purpose on its
    ``attempt``. Leaves the shot's contact sheet beside its summary. ``slot`` is held
    only while models are built and run (a GPU slot): a shot found done takes none.

    The claims go first (:func:`withdraw_claims`), the shot file is replaced only by a
    complete new one, so a failure never costs the previous good file; it records a
    failed summary and re-raises. An interruption (Ctrl-C) records nothing more."""
    from celmask.tasks.manifest.write import write_shot
    from celmask.tasks.run.correct import apply_corrections, in_sync
    from celmask.tasks.run.sheets import write_shot_sheet

    episode_dir = Path(episode_dir)
    config = apply(SegmentConfig(), settings, where="config")
    info = probe(video)
    try:
        faults.check(shot.index, attempt)
        if not force:
            summary = cached_summary(episode_dir, shot, info.fingerprint, settings_key(config), model_ids(config))
            if summary is not None and in_sync(episode_dir, shot.index):
                return ShotOutcome(summary, cached=True)
        with slot(), lend_models(config) as models:
            withdraw_claims(episode_dir, shot.index)
            seg = segment_shot(video, shot, config, models=models)
        summary = apply_corrections(episode_dir, write_shot(episode_dir, seg, config, info.fingerprint), video)
        write_shot_sheet(episode_dir, seg, summary)
    except Exception as error:
        withdraw_claims(episode_dir, shot.index)
        write_summary(
            episode_dir, replace(ShotSummary.failed(episode_dir.name, shot, _describe(error)), ran_on=ran_on(config))
        )
        raise
    summary = replace(summary, ran_on=ran_on(config))
    write_summary(episode_dir, summary)
    return ShotOutcome(summary, cached=False)


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, CelmaskError) else f"{type(error).__name__}: {error}"


def recorded_summaries(episode_dir: str | Path, shots: tuple[Shot, ...]) -> list[ShotSummary]:
    """A summary per shot from what the shot runs recorded; a shot with none (never
    run, or its run was lost) counts as failed."""
    out = []
    for shot in shots:
        summary = read_summary(episode_dir, shot)
        if summary is not None and summary.status == "ok" and not shot_path(episode_dir, shot.index).exists():
            summary = None  # its file was removed since
        out.append(
            summary
            or ShotSummary.failed(Path(episode_dir).name, shot, "no result recorded (never run, or its run was lost)")
        )
    return out
