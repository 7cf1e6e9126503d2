"""The mask manifest: where it lives, what its files hold, and reading it back.

    OUT/<episode_id>/shots/shot_<NNNN>.parquet   one row per (frame, instance), masks at source resolution
    OUT/<episode_id>/_episode.parquet           one row per shot: range, keyframes, status, timings
    OUT/<episode_id>/_SUCCESS.json               written last: the episode is complete

Shot files are the dataset; read them with :func:`dataset` (an episode or a whole
``OUT``), ``pyarrow.parquet.read_table("OUT")`` or pandas (both skip names starting
with "_" or "."), or DuckDB's ``read_parquet('OUT/*/shots/*.parquet')``. The episode
table's "_" keeps it out of that dataset: named ``episode.parquet``, a reader of
``OUT`` takes its schema for the whole tree and returns nonsense without an error. Masks are COCO compressed RLE,
column-major: ``pycocotools.mask.decode({"size": [height, width], "counts": mask_rle})``
or :func:`iter_masks`. Each shot file carries its provenance as key-value metadata
(:class:`ShotMeta`); ``celmask.schema_version`` says which :data:`SCHEMAS` entry its
columns follow, and this module refuses versions it does not know.

Writing is in :mod:`celmask.tasks.manifest.write`, checking in :mod:`celmask.tasks.manifest.validate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import decode_mask
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.layout import (
    EPISODE_TABLE_NAME,
    SHOT_FILE,
    SHOTS_DIR,
)

SCHEMA_VERSION = 2
"""Bump on any change to the columns or the metadata; add the new schema to SCHEMAS.
Version 2 adds the episode's cast (``_tracks.parquet``, ``_cast.parquet``:
:mod:`celmask.tasks.manifest.cast`); its shot files have version 1's columns."""
META_PREFIX = "celmask."
LABELS = ("character",)
"""Label of each class id."""

SHOT_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("pts_time", pa.float64(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("is_keyframe", pa.bool_(), nullable=False),
        pa.field("keyframe_frame", pa.int32()),
        pa.field("keyframe_distance", pa.int32()),
        pa.field("bbox", pa.list_(pa.int32(), 4), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask_rle", pa.string(), nullable=False),
    ]
)
"""Version 1 columns, rows sorted by (frame_index, track_id). ``frame_index`` counts
from the episode's first frame; ``track_id`` is per shot; ``source`` is "detected",
"propagated", "refined" or "corrected" (a hand correction, ``celmask correct``);
``is_keyframe`` marks the frame a track's mask was propagated from; ``keyframe_frame`` is that frame and ``keyframe_distance`` the
number of frames to it (null for masks not propagated); ``bbox`` is (x, y, w, h)
and ``area`` the pixel count of the mask, which is ``height`` x ``width`` (the
video's frame size)."""

SCHEMAS = {1: SHOT_SCHEMA, 2: SHOT_SCHEMA}
"""Every shot schema this celmask reads, by version."""

EPISODE_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("start_time", pa.float64(), nullable=False),
        pa.field("end_time", pa.float64(), nullable=False),
        pa.field("transition", pa.string(), nullable=False),
        pa.field("transition_start", pa.int32(), nullable=False),
        pa.field("transition_end", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("drawings", pa.int32(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("tracks", pa.int32(), nullable=False),
        pa.field("keyframes", pa.string(), nullable=False),
        pa.field("seconds", pa.string(), nullable=False),
        pa.field("total_seconds", pa.float64(), nullable=False),
    ]
)
"""``_episode.parquet``: one row per shot. ``keyframes`` is a JSON list of
``{"track_id", "frame_index", "score", "components": {name: value}}``; ``seconds`` a
JSON object of wall time per stage; ``status`` "ok" or "failed" (``error`` says why)."""


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class ShotMeta:
    """A shot file's key-value metadata: where its rows came from."""

    schema_version: int
    celmask_version: str
    episode_id: str
    shot: Shot
    config_json: str
    """Every setting, canonical JSON (celmask.tasks.core.config.config_json)."""
    config_hash: str
    models: dict[str, str]
    """Stage -> model id with its weight checksum."""
    video_fingerprint: str
    source_size: tuple[int, int]
    """(height, width) of the video's frames: the masks' size."""
    work_size: tuple[int, int]
    """(height, width) the masks were computed at before upscaling."""
    labels: tuple[str, ...]
    rows: int
    drawings: int
    tracks: int

    def to_metadata(self) -> dict[str, str]:
        """Parquet key-value metadata: ``celmask.<field>`` -> canonical JSON."""
        return {
            META_PREFIX + k: v if k == "config_json" else json.dumps(v, sort_keys=True, separators=(",", ":"))
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_metadata(cls, where: str | Path, metadata: dict[bytes, bytes] | None) -> ShotMeta:
        """Parse and check the metadata of a shot file; a foreign file or an unknown
        schema version is a :class:`CelmaskError`."""
        md = {k.decode(): v.decode() for k, v in (metadata or {}).items() if k.startswith(META_PREFIX.encode())}
        if META_PREFIX + "schema_version" not in md:
            raise CelmaskError(
                where,
                "not a celmask shot file (no celmask.schema_version metadata)",
                "point at celmask output, or re-run the shot",
            )
        check_version(where, json.loads(md[META_PREFIX + "schema_version"]))
        try:
            values = {
                name: md[META_PREFIX + name] if name == "config_json" else json.loads(md[META_PREFIX + name])
                for name in cls.__dataclass_fields__
            }
            return cls(
                **{
                    **values,
                    "shot": Shot(**values["shot"]),
                    "source_size": tuple(values["source_size"]),
                    "work_size": tuple(values["work_size"]),
                    "labels": tuple(values["labels"]),
                }
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CelmaskError(
                where,
                f"celmask metadata is incomplete or malformed ({type(error).__name__}: {error})",
                "re-run the shot",
            ) from None


@dataclass(frozen=True)
class Keyframe:
    """A frame a track's masks were propagated from, and the parts of its score."""

    track_id: int
    frame_index: int
    score: float
    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ShotSummary:
    """What the episode table records about one shot: small, JSON-serialisable
    (``to_dict``/``from_dict``), so the per-shot task returns it to the episode flow."""

    episode_id: str
    shot: Shot
    status: str
    """"ok" (the shot file is written) or "failed"."""
    error: str = ""
    frames: int = 0
    drawings: int = 0
    rows: int = 0
    tracks: int = 0
    keyframes: tuple[Keyframe, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage, the manifest's own writing included."""
    ran_on: dict[str, str] = field(default_factory=dict)
    """Where the shot was segmented: ``host``, ``device`` (the models' torch device) and
    ``cuda_visible_devices`` (the GPUs its worker pinned it to, "" when unpinned). In
    ``_run/``'s summary only: the manifest's bytes do not depend on where it ran."""

    @classmethod
    def failed(cls, episode_id: str, shot: Shot, error: str, seconds: dict[str, float] | None = None) -> ShotSummary:
        """A shot whose segmentation or writing failed with ``error``."""
        return cls(episode_id, shot, "failed", error, frames=shot.frame_count, seconds=dict(seconds or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShotSummary:
        return cls(**{**d, "shot": Shot(**d["shot"]), "keyframes": tuple(Keyframe(**k) for k in d["keyframes"])})

    def to_row(self) -> dict[str, Any]:
        """The summary as a row of :data:`EPISODE_SCHEMA`."""
        s = self.shot
        return {
            "episode_id": self.episode_id,
            "shot_index": s.index,
            "start": s.start,
            "end": s.end,
            "start_time": s.start_time,
            "end_time": s.end_time,
            "transition": s.transition,
            "transition_start": s.transition_start,
            "transition_end": s.transition_end,
            "status": self.status,
            "error": self.error,
            "frames": self.frames,
            "drawings": self.drawings,
            "rows": self.rows,
            "tracks": self.tracks,
            "keyframes": json.dumps([asdict(k) for k in self.keyframes], sort_keys=True),
            "seconds": json.dumps(self.seconds, sort_keys=True),
            "total_seconds": round(sum(self.seconds.values()), 4),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ShotSummary:
        shot = Shot(
            row["shot_index"],
            *(
                row[k]
                for k in ("start", "end", "start_time", "end_time", "transition", "transition_start", "transition_end")
            ),
        )
        return cls(
            row["episode_id"],
            shot,
            row["status"],
            row["error"],
            row["frames"],
            row["drawings"],
            row["rows"],
            row["tracks"],
            tuple(Keyframe(**k) for k in json.loads(row["keyframes"])),
            json.loads(row["seconds"]),
        )


# --------------------------------------------------------------------------- layout


def episode_dirs(path: str | Path) -> list[Path]:
    """The episode directories of ``path``: itself when it is one, else its children
    that are; a :class:`CelmaskError` when there are none."""
    path = Path(path)
    fix = "pass the output directory (OUT) or one episode directory (OUT/<episode_id>)"
    if not path.exists():
        raise CelmaskError(path, "no such directory", fix)
    if not path.is_dir():
        raise CelmaskError(path, "is a file, not a manifest directory", fix)
    if (path / SHOTS_DIR).is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / SHOTS_DIR).is_dir())
    if not found:
        raise CelmaskError(path, f"holds no episodes (no <episode_id>/{SHOTS_DIR}/ folder)", fix)
    return found


def shot_files(episode_dir: str | Path) -> dict[int, Path]:
    """Shot index -> file, for the ``shot_<NNNN>.parquet`` files of an episode."""
    out = {}
    for p in (Path(episode_dir) / SHOTS_DIR).glob("shot_*.parquet"):
        match = SHOT_FILE.fullmatch(p.name)
        if match:
            out[int(match.group(1))] = p
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- reading


def check_version(where: str | Path, version: Any) -> None:
    """Refuse a schema version this celmask does not read."""
    if version not in SCHEMAS:
        known = ", ".join(map(str, SCHEMAS))
        raise CelmaskError(
            where,
            f"manifest schema version {version!r}; this celmask reads version {known}",
            "read it with the celmask version that wrote it, or re-run the episode",
        )


def read_shot_meta(path: str | Path) -> ShotMeta:
    """The metadata of a shot file, after checking it is a readable Parquet file whose
    columns match its schema version."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CelmaskError(
            path, f"not a readable Parquet file, truncated or corrupt ({reason})", "re-run this shot"
        ) from None
    meta = ShotMeta.from_metadata(path, schema.metadata)
    differences = schema_differences(schema, SCHEMAS[meta.schema_version])
    if differences:
        raise CelmaskError(
            path,
            f"columns do not match schema version {meta.schema_version}: {'; '.join(differences)}",
            "re-run the shot",
        )
    return meta


def schema_differences(actual: pa.Schema, expected: pa.Schema) -> list[str]:
    """What keeps ``actual`` from being ``expected`` (names and types; order ignored)."""
    out = []
    for f in expected:
        if f.name not in actual.names:
            out.append(f"no column {f.name}")
        elif not actual.field(f.name).type.equals(f.type):
            out.append(f"{f.name} is {actual.field(f.name).type}, not {f.type}")
    extra = sorted(set(actual.names) - set(expected.names))
    if extra:
        out.append(f"unexpected columns {', '.join(extra)}")
    return out


def dataset(path: str | Path) -> ds.Dataset:
    """Every shot file under ``path`` (an episode directory or an output tree) as one
    pyarrow dataset, after checking each file's schema version."""
    files = [p for episode in episode_dirs(path) for p in shot_files(episode).values()]
    for p in files:
        read_shot_meta(p)
    return ds.dataset([str(p) for p in files], schema=SHOT_SCHEMA, format="parquet")


def iter_masks(
    episode_dir: str | Path, *, frame: int | None = None, track: tuple[int, int] | None = None
) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """``(frame_index, shot_index, track_id, mask)`` in (frame, track) order, masks
    (height, width) bool at source resolution: of one ``frame`` of the episode, of one
    ``track`` = (shot_index, track_id), both, or (neither) the whole episode, one shot
    in memory at a time. Held frames yield the same read-only array; copy it to
    change it."""
    if episode_dirs(episode_dir) != [Path(episode_dir)]:
        raise CelmaskError(
            episode_dir,
            "is an output tree, and frame indices are per episode",
            "pass one episode directory OUT/<episode_id>",
        )
    files = shot_files(episode_dir)
    if track is not None:
        files = {track[0]: files[track[0]]} if track[0] in files else {}
    filters = ([("frame_index", "=", frame)] if frame is not None else []) + (
        [("track_id", "=", track[1])] if track is not None else []
    )
    for index, path in files.items():
        meta = read_shot_meta(path)
        if frame is not None and not meta.shot.start <= frame < meta.shot.end:
            continue
        table = pq.read_table(
            path, columns=["frame_index", "track_id", "mask_rle"], filters=filters or None, partitioning=None
        )
        height, width = meta.source_size
        current: dict[str, np.ndarray] = {}
        previous: dict[str, np.ndarray] = {}
        last_frame = None
        for f, t, rle in zip(*(table.column(c).to_pylist() for c in ("frame_index", "track_id", "mask_rle"))):
            if f != last_frame:
                previous, current, last_frame = current, {}, f
            mask = current.get(rle, previous.get(rle))
            if mask is None:
                try:
                    mask = decode_mask(rle, height, width)
                except ValueError as error:
                    raise CelmaskError(
                        path, f"frame {f} track {t}: mask_rle does not decode ({error})", "re-run this shot"
                    ) from None
                mask.flags.writeable = False
            current[rle] = mask
            yield f, index, t, mask


def read_episode_table(episode_dir: str | Path) -> list[ShotSummary]:
    """The shot summaries of the episode table, in shot order."""
    path = Path(episode_dir) / EPISODE_TABLE_NAME
    table = read_versioned_table(
        path, ("no episode table", "run the episode flow, or write_episode_table"), "write the episode table again"
    )
    return [ShotSummary.from_row(row) for row in table.to_pylist()]


def read_versioned_table(path: Path, missing: tuple[str, str], rewrite: str) -> pa.Table:
    """An episode-level table read whole, its schema version checked. A missing file is
    ``missing`` (problem, fix), an unreadable one says so with ``rewrite`` as the fix."""
    try:
        table = pq.read_table(path, partitioning=None)
    except FileNotFoundError:
        raise CelmaskError(path, *missing) from None
    except (OSError, pa.ArrowException) as error:
        raise CelmaskError(path, f"not a readable Parquet file ({str(error).splitlines()[0]})", rewrite) from None
    check_version(path, json.loads((table.schema.metadata or {}).get(b"celmask.schema_version", b"null")))
    return table
