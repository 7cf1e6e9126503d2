"""An episode's run plan: which video, which shots, which settings.

``OUT/<episode_id>/_run/plan.json`` is written once shots are detected. Every later
step reads it instead of being told again: the per-shot runs (here or on another
host), ``celmask rerun`` (which shot is N, from which video, with which settings),
``celmask finalize`` (how many shots make the episode complete), and the report and
exports (where the source video is). ``_run/`` starts with ``_`` so that dataset
readers (pyarrow, pandas, DuckDB) skip it, like ``_episode.parquet``.

A second run of the same video reuses the plan's shots when the video's content
fingerprint, the shot settings and the learned shot model (its weights' checksum) are
unchanged: shot detection decodes the whole episode, and its result depends on nothing
else. ``shot_learned`` records what the learned model did (model id, device, frames
read); ``_SUCCESS.json`` carries it with the shot settings into the manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celmask.models import transnetv2
from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.config import apply
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.layout import PLAN_NAME, RUN_DIR, plan_path
from celmask.tasks.shots.detect import ShotConfig, detect_shots
from celmask.tasks.video import VideoInfo, fingerprint, probe
from celmask.tasks.video.decoding import missing_frames

PLAN_VERSION = 1
MAX_EPISODE_ID_BYTES = 200
"""Longest episode id: a directory name, with room for the temporary names beside it (255 bytes)."""


@dataclass(frozen=True)
class EpisodePlan:
    """What an episode run works through; JSON on disk (``to_dict``/``from_dict``)."""

    episode_id: str
    video: str
    """Absolute path of the source video when planned (a record, never a cache key)."""
    fingerprint: str
    frame_count: int
    fps: float
    size: tuple[int, int]
    """(width, height) of the video's frames."""
    shots: tuple[Shot, ...]
    shot_config: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    """The segmentation settings of the episode run, flat dotted keys (celmask.tasks.core.config.flatten)."""
    shot_learned: dict[str, Any] = field(default_factory=dict)
    """What shot detection's learned model did (ShotResult.learned): mode, model id with checksum, device, frames read."""
    missing_frames: tuple[int, ...] = ()
    """Frames of the video that did not decode (damage): their places hold the frame
    before (celmask.tasks.video.decoding.missing_frames); the episode table,
    ``_SUCCESS.json`` and validate report them."""
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodePlan:
        return cls(
            **{
                **d,
                "size": tuple(d["size"]),
                "shots": tuple(Shot(**s) for s in d["shots"]),
                "missing_frames": tuple(d.get("missing_frames", ())),
            }
        )

    @property
    def video_damage(self) -> dict[str, Any] | None:
        """What the episode's records say of a damaged video, or None when it is whole."""
        return {"missing_frames": list(self.missing_frames)} if self.missing_frames else None

    @property
    def unchanged_video(self) -> str | None:
        """The source video, if it is still where it was, unchanged: a different file
        put under the same name is not this episode's video (its frames would not
        match the masks), so readers draw on grey instead."""
        path = Path(self.video)
        return self.video if path.is_file() and fingerprint(path) == self.fingerprint else None

    @property
    def work_order(self) -> list[Shot]:
        """The shots longest first (by frames, then index): the order to start them in,
        so parallel workers finish together rather than one working alone through a
        long shot that came last (on the demo: 128 s instead of 137 s for the shots)."""
        return sorted(self.shots, key=lambda shot: (-shot.frame_count, shot.index))

    def shot(self, index: int) -> Shot:
        """Shot ``index``, or a one-line error naming the valid range."""
        if not 0 <= index < len(self.shots):
            raise CelmaskError(
                f"shot {index}",
                f"episode {self.episode_id} has shots 0..{len(self.shots) - 1}",
                "pick a shot from the episode table or the report",
            )
        return self.shots[index]


def load_plan(episode_dir: str | Path) -> EpisodePlan:
    """The plan of an episode directory; a one-line error when there is none."""
    path = plan_path(episode_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CelmaskError(
            episode_dir,
            f"has no {RUN_DIR}/{PLAN_NAME}: not an episode written by `celmask run`",
            "pass OUT/<episode_id> of a celmask run, or run the episode first",
        ) from None
    except (OSError, ValueError) as error:
        raise CelmaskError(path, f"unreadable ({error})", "run the episode again to rewrite it") from None
    if not isinstance(data, dict):
        raise CelmaskError(path, "not a plan celmask wrote (not a JSON object)", "run the episode again to rewrite it")
    if data.get("version") != PLAN_VERSION:
        raise CelmaskError(
            path,
            f"plan version {data.get('version')!r}, this celmask reads {PLAN_VERSION}",
            "run the episode again with this celmask",
        )
    try:
        return EpisodePlan.from_dict(data)
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        raise CelmaskError(
            path, f"not a plan celmask wrote ({type(error).__name__}: {error})", "run the episode again to rewrite it"
        ) from None


def save_plan(episode_dir: str | Path, plan: EpisodePlan) -> None:
    path = plan_path(episode_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(plan.to_dict(), indent=1, sort_keys=True) + "\n").encode())


def episode_id_of(video: str | Path, episode_id: str | None = None) -> str:
    """The episode id: ``episode_id`` if given, else the video file's stem; checked to be
    a plain directory name."""
    value = episode_id if episode_id is not None else Path(str(video)).stem
    plain = (
        value
        and value.strip() == value
        and value.isprintable()
        and not set(value) & {"/", "\\", os.sep}
        and not value.startswith(("_", "."))
    )
    if not plain:
        raise CelmaskError(
            f"episode id {value!r}",
            "must be a plain directory name: printable, no slash or backslash, no leading or trailing "
            "space, not starting with '_' or '.'",
            "pass --episode-id with letters, digits, '-' or '_'",
        )
    if len(value.encode()) > MAX_EPISODE_ID_BYTES:
        raise CelmaskError(
            f"episode id {value[:20]!r}...",
            f"is {len(value.encode())} bytes long, at most {MAX_EPISODE_ID_BYTES} fit in a file name",
            "pass a shorter --episode-id",
        )
    return value


SHOT_SETTINGS = "shots."
"""Keys of a run's flat settings that start with this are shot detection's
(``shots.learned=never``: :class:`~celmask.tasks.shots.detect.ShotConfig` fields); the
rest are segmentation's."""


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(segmentation settings, shot-detection settings without their ``shots.`` prefix)."""
    shots = {k[len(SHOT_SETTINGS) :]: v for k, v in settings.items() if k.startswith(SHOT_SETTINGS)}
    return {k: v for k, v in settings.items() if not k.startswith(SHOT_SETTINGS)}, shots


def shot_config_of(settings: dict[str, Any], where: str = "config") -> ShotConfig:
    """The shot detector's configuration from the ``shots.*`` keys of ``settings``; a bad
    key or value is one line."""
    return apply(ShotConfig(), split_settings(settings)[1], where=f"{where} (shots.*)")


def plan_episode(
    video: str | Path,
    episode_dir: str | Path,
    config: dict[str, Any],
    shot_config: ShotConfig | None = None,
    *,
    info: VideoInfo | None = None,
) -> tuple[EpisodePlan, bool]:
    """Probe ``video``, detect its shots (or reuse the plan already in ``episode_dir``
    when fingerprint and shot settings match), save and return the plan and whether its
    shots were reused."""
    shot_config = shot_config or ShotConfig()
    info = info or probe(video)
    episode_dir = Path(episode_dir)
    shot_settings = json.loads(json.dumps(asdict(shot_config)))
    old = None
    if plan_path(episode_dir).exists():
        try:
            old = load_plan(episode_dir)
        except CelmaskError:
            old = None  # an unreadable plan is rebuilt
    model = None if shot_config.learned == "never" else transnetv2.model_id()
    reused = (
        old is not None
        and old.fingerprint == info.fingerprint
        and old.shot_config == shot_settings
        and old.shot_learned.get("model") == model
    )
    if reused:
        shots, learned = old.shots, old.shot_learned
    else:
        result = detect_shots(video, shot_config, info=info)
        shots, learned = tuple(result.shots), result.learned
    # the shots seek by these times anyway: computed here once, they are cached for them
    missing = old.missing_frames if reused else missing_frames(video)
    plan = EpisodePlan(
        episode_id=episode_dir.name,
        video=str(Path(video).resolve()),
        fingerprint=info.fingerprint,
        frame_count=info.frame_count,
        fps=info.fps,
        size=(info.width, info.height),
        shots=shots,
        shot_config=shot_settings,
        config=dict(config),
        shot_learned=learned,
        missing_frames=missing,
    )
    if plan != old:
        save_plan(episode_dir, plan)
    return plan, reused


def recorded_video(episode_dir: str | Path) -> str | None:
    """The source video an episode's run recorded, if it is still there, unchanged."""
    try:
        return load_plan(episode_dir).unchanged_video
    except CelmaskError:
        return None
