"""Checking a mask manifest against everything a consumer relies on.

Per shot file: readable, celmask metadata of a known schema version, the columns
of that version, one row per (frame, track) sorted by frame then track, frames
inside the shot's range, every mask string a valid RLE of height x width, bbox and
area equal to the mask's. Per episode: every shot present, the shots tiling the
frames, one video, and ``_SUCCESS.json`` agreeing with the files. RLE strings are
checked without decoding (:func:`celmask.tasks.core.rle.rle_counts`), once per distinct mask, so
a 24-minute episode takes seconds. From schema version 2 an episode's cast
(:func:`check_cast`): a row per track, an episode-wide character per row or null,
never one character twice in a shot, made from the shot files as they are.

Each problem is one line, ``where: what; how to fix``. A path that is no manifest at
all (missing, a file, no episodes) is a :class:`CelmaskError` instead.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import rle_counts, rle_geometry
from celmask.tasks.core.types import SOURCE_LABELS
from celmask.tasks.manifest.cast import file_key, has_cast, read_cast, read_cast_info, read_tracks
from celmask.tasks.manifest.layout import (
    CAST_NAME,
    EPISODE_TABLE_NAME,
    SHOT_FILE,
    SHOTS_DIR,
    SUCCESS_NAME,
    TRACKS_NAME,
    shot_path,
)
from celmask.tasks.manifest.schema import (
    ShotMeta,
    check_version,
    episode_dirs,
    read_episode_table,
    read_shot_meta,
    shot_files,
)


@dataclass(frozen=True)
class Problem:
    where: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}; {self.fix}" if self.fix else f"{self.where}: {self.problem}"


@dataclass
class Validation:
    """What was checked and what is wrong."""

    problems: list[Problem] = field(default_factory=list)
    episodes: int = 0
    shots: int = 0
    frames: int = 0
    rows: int = 0
    masks: int = 0
    """Distinct mask strings checked (held frames share theirs)."""
    metas: list[ShotMeta] = field(default_factory=list)
    """Metadata of the shot files that could be read."""

    def add(self, where: str | Path, problem: str, fix: str = "") -> None:
        self.problems.append(Problem(str(where), problem, fix))


def validate(path: str | Path) -> Validation:
    """Check every episode under ``path`` (an output tree or one episode directory)."""
    out = Validation()
    for episode in episode_dirs(path):
        success = _read_success(episode, out)
        expected = success.get("shots") if success else None
        check = check_shots(episode, expected if isinstance(expected, int) else None)
        out.problems += check.problems
        out.episodes += 1
        for name in ("shots", "frames", "rows", "masks"):
            setattr(out, name, getattr(out, name) + getattr(check, name))
        if success is None:
            if not (episode / SUCCESS_NAME).exists():
                out.add(
                    episode,
                    f"no {SUCCESS_NAME}: the episode is incomplete or not finalized",
                    "finish the run, or run celmask finalize once every shot is written",
                )
        else:
            found = {
                "episode_id": episode.name,
                "shots": check.shots,
                "frames": check.frames,
                "rows": check.rows,
                "video_fingerprint": check.metas[0].video_fingerprint if check.metas else "",
                "config_hashes": sorted({m.config_hash for m in check.metas}),
            }
            wrong = [
                f"{k} {success.get(k)!r} but the files hold {v!r}" for k, v in found.items() if success.get(k) != v
            ]
            if wrong:
                out.add(
                    episode / SUCCESS_NAME,
                    f"disagrees with the shot files: {'; '.join(wrong)}",
                    "run celmask finalize again",
                )
            missing = (success.get("video_damage") or {}).get("missing_frames")
            if missing:
                out.add(
                    episode / SUCCESS_NAME,
                    f"the video is damaged: {len(missing)} frame(s) did not decode ({_frame_list(missing)}); "
                    "their masks are those of the frame before",
                    "repair or replace the source video and run the episode again",
                )
        if (episode / EPISODE_TABLE_NAME).exists():
            _check_episode_table(episode, check, out)
        if (success or {}).get("schema_version", 1) >= 2 or has_cast(episode):
            check_cast(episode, (success or {}).get("cast"), out)
    return out


def _frame_list(frames: list[int], shown: int = 8) -> str:
    text = ", ".join(map(str, frames[:shown]))
    return f"frames {text}" + (f" and {len(frames) - shown} more" if len(frames) > shown else "")


def check_shots(episode_dir: str | Path, expected_shots: int | None = None) -> Validation:
    """Check the shot files of one episode: ``expected_shots`` of them (default: as
    many as the highest index says), each valid, together tiling the episode's frames."""
    episode_dir = Path(episode_dir)
    out = Validation()
    files = shot_files(episode_dir)
    for stray in sorted((episode_dir / SHOTS_DIR).glob("*.parquet")):
        if not SHOT_FILE.fullmatch(stray.name):
            out.add(
                stray, "is not a shot_<NNNN>.parquet file but dataset readers would read it", "move it out of shots/"
            )
    count = expected_shots if expected_shots is not None else max(files, default=-1) + 1
    for index in range(count):
        if index not in files:
            out.add(shot_path(episode_dir, index), "missing", f"re-run shot {index} of {count}")
    for index, path in files.items():
        if index >= count:
            out.add(
                path,
                f"is not one of the {count} shots of the episode",
                "delete it, or finalize with the right shot count",
            )
            continue
        check_shot_file(path, index, episode_dir.name, out)
    _check_tiling(episode_dir, out)
    return out


def check_shot_file(path: Path, index: int, episode_id: str, out: Validation) -> None:
    """Check one shot file, adding its counts, metadata and problems to ``out``."""
    try:
        meta = read_shot_meta(path)
        table = pq.read_table(path, partitioning=None)
    except CelmaskError as error:
        out.add(error.where, error.problem, error.fix)
        return
    except (OSError, pa.ArrowException) as error:
        out.add(path, f"data pages unreadable, truncated or corrupt ({str(error).splitlines()[0]})", "re-run this shot")
        return
    out.shots += 1
    out.metas.append(meta)
    out.frames += meta.shot.frame_count
    out.rows += table.num_rows
    fix = "re-run this shot"
    if meta.shot.index != index or meta.episode_id != episode_id:
        out.add(
            path,
            f"metadata says episode {meta.episode_id!r} shot {meta.shot.index}, the path episode {episode_id!r} shot {index}",
            "move it where it belongs or re-run the shot",
        )
    if table.num_rows != meta.rows:
        out.add(path, f"holds {table.num_rows} rows, its metadata {meta.rows}", fix)
    c = {name: table.column(name) for name in ("frame_index", "track_id")}
    frames, tracks = (c[name].to_numpy() for name in ("frame_index", "track_id"))

    def bad(rows: np.ndarray, what: str) -> None:
        if rows.any():
            first = int(np.argmax(rows))
            out.add(path, f"{int(rows.sum())} row(s) {what} (first: frame {frames[first]} track {tracks[first]})", fix)

    h, w = meta.source_size
    bad(
        pc.not_equal(table.column("episode_id"), episode_id).to_numpy(zero_copy_only=False),
        f"with an episode_id other than {episode_id!r}",
    )
    bad(table.column("shot_index").to_numpy() != meta.shot.index, f"with a shot_index other than {meta.shot.index}")
    bad(
        (frames < meta.shot.start) | (frames >= meta.shot.end),
        f"outside the shot's frames [{meta.shot.start}, {meta.shot.end})",
    )
    step = np.diff(frames.astype(np.int64) * (2**32) + tracks)
    bad(np.concatenate([[False], step == 0]), "repeating a (frame, track) already in the shot")
    bad(np.concatenate([[False], step < 0]), "out of (frame, track) order")
    bad(
        (table.column("height").to_numpy() != h) | (table.column("width").to_numpy() != w),
        f"whose size is not the video's {w}x{h}",
    )
    bad(
        ~pc.is_in(table.column("label"), pa.array(meta.labels)).to_numpy(zero_copy_only=False),
        f"with a label not in {list(meta.labels)}",
    )
    bad(
        ~pc.is_in(table.column("source"), pa.array(SOURCE_LABELS)).to_numpy(zero_copy_only=False),
        f"with a source not in {list(SOURCE_LABELS)}",
    )
    score = table.column("score").to_numpy()
    bad(~((score >= 0) & (score <= 1)), "with a score outside [0, 1]")
    key, distance = (table.column(name) for name in ("keyframe_frame", "keyframe_distance"))
    no_key, no_distance = (c.is_null().to_numpy(zero_copy_only=False) for c in (key, distance))
    agree = np.abs(frames - key.fill_null(-1).to_numpy()) == distance.fill_null(-1).to_numpy()
    bad(
        ~((no_key & no_distance) | (~no_key & ~no_distance & agree)),
        "whose keyframe_distance is not |frame - keyframe_frame|",
    )
    _check_masks(table, meta, out, path, bad)


def _check_masks(
    table: pa.Table, meta: ShotMeta, out: Validation, path: Path, bad: Callable[[np.ndarray, str], None]
) -> None:
    """Every distinct mask string decodes to height x width, and each row's bbox and
    area are its mask's."""
    h, w = meta.source_size
    encoded = table.column("mask_rle").combine_chunks().dictionary_encode()
    which = encoded.indices.to_numpy()
    areas = np.full(len(encoded.dictionary), -1, np.int64)
    boxes = np.full((len(encoded.dictionary), 4), -1, np.int64)
    broken = None
    for i, counts in enumerate(encoded.dictionary.to_pylist()):
        try:
            areas[i], boxes[i] = rle_geometry(rle_counts(counts, h, w), h)
        except ValueError as error:
            broken = broken or str(error)
    out.masks += len(areas)
    corrupt = areas[which] < 0
    bad(corrupt, f"whose mask_rle is not a valid RLE of {w}x{h} ({broken})")
    stored = np.array(table.column("bbox").combine_chunks().flatten().to_numpy(), np.int64).reshape(-1, 4)
    bad(~corrupt & (table.column("area").to_numpy() != areas[which]), "whose area is not the mask's pixel count")
    bad(~corrupt & (stored != boxes[which]).any(axis=1), "whose bbox is not the mask's (x, y, w, h)")


def _check_tiling(episode_dir: Path, out: Validation) -> None:
    """The valid shots follow each other without gaps or overlaps, on one video."""
    metas = sorted(out.metas, key=lambda m: m.shot.index)
    if metas and metas[0].shot.index == 0 and metas[0].shot.start != 0:
        out.add(
            shot_path(episode_dir, 0),
            f"starts at frame {metas[0].shot.start}, not 0",
            "re-run the episode's shot detection and shots",
        )
    for a, b in itertools.pairwise(metas):
        if b.shot.index == a.shot.index + 1 and b.shot.start != a.shot.end:
            out.add(
                shot_path(episode_dir, b.shot.index),
                f"starts at frame {b.shot.start} but shot {a.shot.index} ends at {a.shot.end}",
                "re-run both shots from one shot detection",
            )
    videos = {m.video_fingerprint for m in metas}
    if len(videos) > 1:
        out.add(
            episode_dir,
            f"shots come from {len(videos)} different videos ({', '.join(sorted(videos))})",
            "re-run the episode from one video",
        )


def _read_success(episode: Path, out: Validation) -> dict | None:
    """``_SUCCESS.json`` of an episode; None (and a problem) when it is unreadable."""
    path = episode / SUCCESS_NAME
    if not path.exists():
        return None
    try:
        success = json.loads(path.read_text())
        check_version(path, success.get("schema_version"))
        return success
    except (ValueError, AttributeError) as error:
        out.add(path, f"is not valid JSON ({error})", "run celmask finalize again")
    except CelmaskError as error:
        out.add(error.where, error.problem, error.fix)
    return None


def _check_episode_table(episode: Path, check: Validation, out: Validation) -> None:
    """The episode table is readable, and every shot written has an "ok" row."""
    try:
        rows = {s.shot.index: s for s in read_episode_table(episode)}
    except CelmaskError as error:
        out.add(error.where, error.problem, error.fix)
        return
    for meta in check.metas:
        summary = rows.get(meta.shot.index)
        if summary is None or summary.status != "ok":
            if summary is None:
                out.add(
                    episode / EPISODE_TABLE_NAME,
                    f"shot {meta.shot.index} has no row though its file is written",
                    "write the episode table again from the shots' summaries (celmask finalize)",
                )
            else:  # its last run failed; the file is an earlier run's
                out.add(
                    episode / EPISODE_TABLE_NAME,
                    f"shot {meta.shot.index}'s last run has status {summary.status!r} (its file is an earlier run's)",
                    f"re-run shot {meta.shot.index}",
                )


def check_cast(episode: Path, counts: dict | None, out: Validation) -> None:
    """The cast tables of an episode (schema version 2) against its shot files and
    the ``cast`` counts of ``_SUCCESS.json`` (when given)."""
    fix = "run celmask finalize again"
    try:
        tracks, cast, info = read_tracks(episode), read_cast(episode), read_cast_info(episode)
    except CelmaskError as error:
        out.add(error.where, error.problem, error.fix)
        return
    where = episode / TRACKS_NAME
    files = shot_files(episode)
    damaged = {p.where for p in out.problems}  # a shot file with problems of its own is named once
    made_from = info.get("shots", {})
    stale = [i for i, p in files.items() if str(p) not in damaged and made_from.get(str(i)) != file_key(p)]
    gone = sorted(int(i) for i in set(made_from) - {str(i) for i in files})
    if stale or gone:  # what else disagrees follows from this
        out.add(where, f"was made from other shot files than those there (shots {sorted(stale + gone)})", fix)
        return
    expected = set()
    for index, path in files.items():
        try:
            table = pq.read_table(path, columns=["track_id", "area"], partitioning=None)
        except (OSError, pa.ArrowException):
            continue  # check_shot_file says so
        shown = table.column("track_id").to_numpy()[table.column("area").to_numpy() > 0]
        expected |= {(index, int(t)) for t in np.unique(shown)}
    found = [(t.shot_index, t.track_id) for t in tracks]
    if set(found) != expected or len(found) != len(set(found)):
        missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
        out.add(
            where, f"does not hold one row per track of the shot files (missing {missing[:3]}, extra {extra[:3]})", fix
        )
    ids = {c.character_id: c for c in cast}
    by_shot: dict[tuple[int, int], int] = {}
    for t in tracks:
        if not 0.0 <= t.character_confidence <= 1.0:
            out.add(
                where,
                f"shot {t.shot_index} track {t.track_id}: confidence {t.character_confidence} outside [0, 1]",
                fix,
            )
        if t.character_id is None:
            if t.character is not None:
                out.add(
                    where, f"shot {t.shot_index} track {t.track_id}: named {t.character!r} without a character_id", fix
                )
            continue
        if t.character_id not in ids:
            out.add(
                where, f"shot {t.shot_index} track {t.track_id}: character {t.character_id} is not in the cast", fix
            )
        elif ids[t.character_id].character != t.character:
            out.add(
                where,
                f"shot {t.shot_index} track {t.track_id}: named {t.character!r}, its character {ids[t.character_id].character!r}",
                fix,
            )
        other = by_shot.setdefault((t.shot_index, t.character_id), t.track_id)
        if other != t.track_id:
            out.add(
                where,
                f"shot {t.shot_index}: tracks {other} and {t.track_id} are both character {t.character_id}",
                "two tracks of one shot are two characters: " + fix,
            )
    for c in cast:
        members = [t for t in tracks if t.character_id == c.character_id]
        facts = (len(members), tuple(sorted({t.shot_index for t in members})), sum(t.frames for t in members))
        if facts != (c.tracks, tuple(c.shots), c.frames):
            out.add(
                episode / CAST_NAME,
                f"character {c.character_id}: tracks, shots or frames disagree with {TRACKS_NAME}",
                fix,
            )
    if counts is not None:
        actual = {
            "characters": len(cast),
            "tracks": len(tracks),
            "unassigned": sum(t.character_id is None for t in tracks),
        }
        if counts != actual:
            out.add(episode / SUCCESS_NAME, f"says the cast is {counts}, the tables hold {actual}", fix)
