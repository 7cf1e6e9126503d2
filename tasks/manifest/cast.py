"""The episode's cast (schema version 2): who each track is, across the whole episode.

    OUT/<episode_id>/_tracks.parquet   one row per (shot, track): its character_id and confidence
    OUT/<episode_id>/_cast.parquet     one row per character: appearances, keyframe, signature

Track ids live inside one shot; ``character_id`` is the episode's: the same character
has it in every shot it appears in, and two tracks of one shot never share it. It is
null where the colours under a track's masks do not say who it is (too small, or as
close to two characters). Without enrolment characters are numbered by first
appearance; ``character`` names them when the episode was run with ``--cast DIR``.
Join on ``(shot_index, track_id)`` to give every mask row its character::

    masks = pd.read_parquet("OUT/ep/shots")
    tracks = pd.read_parquet("OUT/ep/_tracks.parquet")
    masks.merge(tracks[["shot_index", "track_id", "character_id"]], on=["shot_index", "track_id"])

The tables are the finish step's (they depend on every shot), so the shot files stay
what each shot's run wrote: a re-run of one shot and the content-keyed shot cache
keep working. Episodes of schema version 1 have no cast: :func:`read_tracks` gives
their tracks with a null character.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from celmask.tasks.core.atomic import atomic_file
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import CAST_NAME, TRACKS_NAME
from celmask.tasks.manifest.schema import SCHEMA_VERSION, read_versioned_table, schema_differences

TRACKS_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("character_id", pa.int32()),
        pa.field("character", pa.string()),
        pa.field("character_confidence", pa.float32(), nullable=False),
        pa.field("first_frame", pa.int32(), nullable=False),
        pa.field("last_frame", pa.int32(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("pixels", pa.int64(), nullable=False),
    ]
)
"""``_tracks.parquet``, sorted by (shot_index, track_id): ``frames`` the track is on,
``pixels`` of colour its signature was made of (0: none, so no character),
``character_confidence`` 0..1 (how much closer the track is to its character than
to the next one)."""

CAST_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("character_id", pa.int32(), nullable=False),
        pa.field("character", pa.string()),
        pa.field("shots", pa.list_(pa.int32()), nullable=False),
        pa.field("tracks", pa.int32(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("screen_time", pa.float64(), nullable=False),
        pa.field("first_frame", pa.int32(), nullable=False),
        pa.field("keyframe_shot", pa.int32(), nullable=False),
        pa.field("keyframe_track", pa.int32(), nullable=False),
        pa.field("keyframe_frame", pa.int32(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("merge_distance", pa.float32(), nullable=False),
        pa.field("uncertain", pa.bool_(), nullable=False),
        pa.field("signature", pa.list_(pa.float32()), nullable=False),
    ]
)
"""``_cast.parquet``, sorted by character_id: the ``shots`` it appears in, its
``tracks``, ``frames`` and ``screen_time`` (seconds), the representative keyframe
(the frame of its largest sampled mask), its members' lowest ``confidence``, the
largest average distance at which it took in a track (``merge_distance``),
``uncertain`` when either is near its limit, and ``signature``, the mean colour
histogram of its tracks (:mod:`celmask.tasks.cast.signature`)."""


@dataclass(frozen=True)
class TrackCharacter:
    """A row of ``_tracks.parquet``."""

    shot_index: int
    track_id: int
    character_id: int | None
    character: str | None
    character_confidence: float
    first_frame: int
    last_frame: int
    frames: int
    pixels: int


@dataclass(frozen=True)
class Character:
    """A row of ``_cast.parquet``."""

    character_id: int
    character: str | None
    shots: tuple[int, ...]
    tracks: int
    frames: int
    screen_time: float
    first_frame: int
    keyframe_shot: int
    keyframe_track: int
    keyframe_frame: int
    confidence: float
    merge_distance: float
    uncertain: bool
    signature: tuple[float, ...]


def _write(path: Path, schema: pa.Schema, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    metadata = {
        "celmask.schema_version": str(SCHEMA_VERSION),
        "celmask.version": version("celmask"),
        "celmask.cast": json.dumps(info, sort_keys=True, separators=(",", ":")),
    }
    table = pa.Table.from_pylist(rows, schema=schema.with_metadata(metadata))
    with atomic_file(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def write_cast(
    episode_dir: str | Path, tracks: list[TrackCharacter], cast: list[Character], info: dict[str, Any]
) -> None:
    """Write ``_tracks.parquet`` then ``_cast.parquet`` (each atomically); ``info``
    (how the cast was made: signature version, threshold, the shot files it read,
    enrolment) goes into both files' ``celmask.cast`` metadata."""
    episode_dir = Path(episode_dir)
    eid = {"episode_id": episode_dir.name}
    _write(
        episode_dir / TRACKS_NAME,
        TRACKS_SCHEMA,
        [{**eid, **asdict(t)} for t in sorted(tracks, key=lambda t: (t.shot_index, t.track_id))],
        info,
    )
    _write(
        episode_dir / CAST_NAME,
        CAST_SCHEMA,
        [{**eid, **asdict(c)} for c in sorted(cast, key=lambda c: c.character_id)],
        info,
    )


def _read(path: Path, schema: pa.Schema) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    table = read_versioned_table(
        path, ("missing", "run celmask finalize on the episode to compute its cast"), "run celmask finalize again"
    )
    metadata = table.schema.metadata or {}
    differences = schema_differences(table.schema, schema)
    if differences:
        raise CelmaskError(path, f"columns are not the cast's: {'; '.join(differences)}", "run celmask finalize again")
    try:
        info = json.loads(metadata.get(b"celmask.cast", b"{}"))
    except ValueError:
        raise CelmaskError(path, "celmask.cast metadata is not JSON", "run celmask finalize again") from None
    return table.to_pylist(), info


def has_cast(episode_dir: str | Path) -> bool:
    """Whether the episode's finish step wrote a cast (schema version 2)."""
    return (Path(episode_dir) / TRACKS_NAME).exists()


def read_tracks(episode_dir: str | Path) -> list[TrackCharacter]:
    """The rows of ``_tracks.parquet`` in (shot, track) order."""
    rows, _ = _read(Path(episode_dir) / TRACKS_NAME, TRACKS_SCHEMA)
    return [TrackCharacter(**{k: v for k, v in r.items() if k != "episode_id"}) for r in rows]


def read_cast(episode_dir: str | Path) -> list[Character]:
    """The rows of ``_cast.parquet`` in character order."""
    rows, _ = _read(Path(episode_dir) / CAST_NAME, CAST_SCHEMA)
    return [
        Character(
            **{
                **{k: v for k, v in r.items() if k != "episode_id"},
                "shots": tuple(r["shots"]),
                "signature": tuple(r["signature"]),
            }
        )
        for r in rows
    ]


def read_cast_info(episode_dir: str | Path) -> dict[str, Any]:
    """How the episode's cast was made (``celmask.cast`` metadata of ``_tracks.parquet``)."""
    return _read(Path(episode_dir) / TRACKS_NAME, TRACKS_SCHEMA)[1]


def characters_of(episode_dir: str | Path) -> dict[tuple[int, int], TrackCharacter]:
    """(shot_index, track_id) -> its row, for exports and the report; empty for an
    episode without a cast (schema version 1, or not finished)."""
    if not has_cast(episode_dir):
        return {}
    return {(t.shot_index, t.track_id): t for t in read_tracks(episode_dir)}


def file_key(path: Path) -> str:
    """The shot file's content key: signatures are valid for exactly these bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def character_tracks(episode_dir: str | Path, character: str) -> tuple[int, set[tuple[int, int]]]:
    """(character_id, its (shot, track)s) of ``character``, an id or an enrolled name;
    a one-line error when the episode has no cast or no such character."""
    episode_dir = Path(episode_dir)
    if not has_cast(episode_dir):
        raise CelmaskError(
            episode_dir, "has no cast (schema version 1, or never finished)", "run celmask finalize on it"
        )
    cast = read_cast(episode_dir)
    chosen = [c for c in cast if c.character == character or str(c.character_id) == character.strip()]
    if not chosen:
        known = ", ".join(f"{c.character_id}" + (f" ({c.character})" if c.character else "") for c in cast)
        raise CelmaskError(
            "--character", f"episode {episode_dir.name} has no character {character!r}", f"use one of {known}"
        )
    cid = chosen[0].character_id
    return cid, {(t.shot_index, t.track_id) for t in read_tracks(episode_dir) if t.character_id == cid}
