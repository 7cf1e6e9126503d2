"""The clean-up loop: a person corrects a track on one frame and the correction is
carried through the shot, without redoing anything else.

    check the correction against the episode (complete, shot, frame, track, mask)
    store it under _corrections/ (tasks/manifest/corrections.py)
    rebuild the shot file from the shot as segmented (its base) and every correction:
        decode the shot's drawings at working size (no model runs but the propagator and refiner)
        re-propagate each corrected track from its corrected drawings (tasks/segment/corrections.py)
        drop deleted tracks, add new ones; every other row is copied as it is
    write the shot file atomically, update its summary, finish the episode

The run's own masks of a track came from its keyframes; a correction is one more,
permanent keyframe that wins where it reaches (see :mod:`celmask.tasks.segment.corrections`).
A shot re-run (``celmask rerun``, or ``celmask run`` after a setting changed) keeps
its new result as the base and applies the corrections again
(:func:`apply_corrections`); a correction that no longer fits it (its frame left the
shot, its track is gone) is reported and recorded in the shot file, never dropped.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from celmask.tasks.core.atomic import atomic_file, remove_durably, write_atomic
from celmask.tasks.core.config import apply
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.rle import decode_mask, encode_mask, rle_geometry, runs_string, window_runs
from celmask.tasks.core.types import Shot, Source, still_size
from celmask.tasks.manifest.corrections import (
    META_KEY,
    NEW_TRACK_BASE,
    Correction,
    applied,
    corrections_hash,
    load_corrections,
    save_correction,
)
from celmask.tasks.manifest.layout import (
    base_shot_path,
    corrections_dir,
    sheet_path,
    shot_path,
    success_path,
    summary_path,
)
from celmask.tasks.manifest.read import read_shot_rows
from celmask.tasks.manifest.schema import LABELS, SHOT_SCHEMA, Keyframe, ShotMeta, ShotSummary, read_shot_meta
from celmask.tasks.manifest.write import ROW_GROUP_ROWS, WRITER_OPTIONS, upscale_window
from celmask.tasks.outputs.report import contact_sheet, jpeg
from celmask.tasks.run.finish import EpisodeResult, finish_episode
from celmask.tasks.run.plan import load_plan
from celmask.tasks.run.shot import read_summary, write_summary
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.corrections import carry_corrections
from celmask.tasks.segment.model_sets import build_followers
from celmask.tasks.segment.shot import unique_drawings
from celmask.tasks.shots.holds import HoldConfig
from celmask.tasks.video import iter_frames, probe

log = logging.getLogger(__name__)

CORRECTED_KEY = "corrected"
"""The one score component of a corrected keyframe in the shot's summary."""
SCALE_ASPECT_TOLERANCE = 0.01
"""A mask of another size is scaled to the video's when its aspect ratio is this close."""


# --------------------------------------------------------------------------- input


def read_mask(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The (height, width) = ``size`` bool mask of a PNG (non-zero pixels; an RGBA
    image's alpha when it has any transparency), and a note saying where it came from
    and whether it was scaled. A mask of another aspect ratio is refused."""
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
            mode = image.mode
    except (OSError, ValueError) as error:
        raise CelmaskError(path, f"not a readable image ({error})", "pass a PNG mask (non-zero = character)") from None
    if array.ndim == 3:
        alpha = array[..., 3] if mode in ("RGBA", "LA") else None
        array = alpha if alpha is not None and (alpha < 255).any() else array[..., :3].max(axis=2)
    mask = array > 0
    return scale_mask(mask, size, path), f"from {Path(path).name}" + scaled_note(mask.shape, size)


def scaled_note(shape: tuple[int, ...], size: tuple[int, int]) -> str:
    return "" if tuple(shape[:2]) == tuple(size) else f", scaled from {shape[1]}x{shape[0]} to {size[1]}x{size[0]}"


def scale_mask(mask: np.ndarray, size: tuple[int, int], where: str | Path) -> np.ndarray:
    """``mask`` at (height, width) ``size``: as it is, scaled when only its resolution
    differs, else a one-line error."""
    h, w = mask.shape
    if (h, w) == tuple(size):
        return mask
    if abs(w / h - size[1] / size[0]) > SCALE_ASPECT_TOLERANCE * size[1] / size[0]:
        raise CelmaskError(
            where,
            f"mask is {w}x{h} but the video is {size[1]}x{size[0]}, another shape",
            f"draw the mask on the frame at {size[1]}x{size[0]}",
        )
    soft = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return soft >= 0.5


def check_episode(episode_dir: Path) -> None:
    """An episode may be corrected only when it is complete (a running or failed one is not)."""
    if not success_path(episode_dir).exists():
        raise CelmaskError(
            episode_dir,
            "has no _SUCCESS.json: not complete, or a run is still writing it",
            "let the run finish (or re-run its failed shots), then correct it",
        )


def shot_tracks(episode_dir: Path, shot: int) -> set[int]:
    """The track ids in shot ``shot``'s file now."""
    table = pq.read_table(shot_path(episode_dir, shot), columns=["track_id"], partitioning=None)
    return set(pc.unique(table.column("track_id")).to_pylist())


def make_correction(
    episode_dir: Path,
    shot: Shot,
    track: int | None,
    frame: int | None,
    mask: np.ndarray | None,
    *,
    delete: bool = False,
    note: str = "",
    who: str | None = None,
) -> Correction:
    """A correction of ``shot`` checked against the episode: ``mask`` on ``frame`` of
    ``track`` (None: a new track, numbered after those added before), or
    (``delete``) the track's removal. Bad input is a one-line error."""
    where = f"{episode_dir} shot {shot.index}"
    tracks = shot_tracks(episode_dir, shot.index) | {
        c.track for c in load_corrections(episode_dir, shot.index) if c.new_track
    }
    if track is not None and track not in tracks:
        raise CelmaskError(
            f"{where} track {track}",
            f"no such track (the shot has {sorted(tracks) or 'none'})",
            "pick a track from the report, or add one with --new-track",
        )
    stamp = dict(who=who or getpass.getuser(), when=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    if delete:
        return Correction("delete", shot.index, int(track), note=note, **stamp)
    if frame is None or not shot.start <= frame < shot.end:
        raise CelmaskError(
            f"{where} frame {frame}",
            f"not a frame of the shot [{shot.start}, {shot.end})",
            "pass --frame with a frame inside the shot",
        )
    if mask is None or not mask.any():
        raise CelmaskError(f"{where} frame {frame}", "the mask is empty", "draw the character, or use --delete-track")
    new = track is None
    if new:
        track = max([NEW_TRACK_BASE - 1, *(t for t in tracks if t >= NEW_TRACK_BASE)]) + 1
    counts, _ = encode_mask(mask)
    return Correction(
        "mask", shot.index, int(track), int(frame), *mask.shape, counts, new_track=new, note=note, **stamp
    )


# --------------------------------------------------------------------------- command


@dataclass(frozen=True)
class Corrected:
    """What one ``celmask correct`` did."""

    corrections: list[Correction]
    summaries: dict[int, ShotSummary]
    """Shot -> its summary after the corrections."""
    seconds: float
    """Wall time of storing and applying them (not finishing the episode)."""
    result: EpisodeResult


def correct(episode_dir: str | Path, corrections: list[Correction], video: str | Path | None = None) -> Corrected:
    """Store ``corrections`` (made by :func:`make_correction`), rebuild each shot they
    touch, and finish the episode (table, ``_SUCCESS.json``, report). When a shot
    cannot be rebuilt, its stored corrections and files are as before."""
    start = time.perf_counter()
    episode_dir = Path(episode_dir)
    check_episode(episode_dir)
    plan = load_plan(episode_dir)
    summaries = {}
    for index in sorted({c.shot for c in corrections}):
        mine = [c for c in corrections if c.shot == index]
        paths = [corrections_dir(episode_dir, index) / c.file for c in mine]
        before = {p: p.read_bytes() for p in paths if p.exists()}
        try:
            for c in mine:
                save_correction(episode_dir, c)
            summaries[index] = apply_stored(episode_dir, plan.shot(index), video or plan.video)
        except BaseException:
            for p in paths:
                if p in before:
                    write_atomic(p, before[p])
                else:
                    p.unlink(missing_ok=True)
            raise
    seconds = time.perf_counter() - start
    return Corrected(corrections, summaries, seconds, finish_episode(episode_dir, plan))


def apply_stored(episode_dir: str | Path, shot: Shot, video: str | Path) -> ShotSummary:
    """Rebuild ``shot`` from its stored corrections and record its new summary (what a
    ``correct-shot`` flow run does, flows/correct.py)."""
    summary = read_summary(episode_dir, shot)
    if summary is None or summary.status != "ok":
        raise CelmaskError(
            summary_path(episode_dir, shot.index), "no good result of the shot to correct", "re-run the shot"
        )
    summary = apply_corrections(episode_dir, summary, video)
    write_summary(Path(episode_dir), summary)
    return summary


# --------------------------------------------------------------------------- rebuilding a shot


def in_sync(episode_dir: str | Path, shot: int) -> bool:
    """Whether shot ``shot``'s file holds exactly its stored corrections (none: none)."""
    path = shot_path(episode_dir, shot)
    return applied(path).get("hash", "") == corrections_hash(load_corrections(episode_dir, shot))


def apply_corrections(episode_dir: str | Path, summary: ShotSummary, video: str | Path) -> ShotSummary:
    """Rebuild the file of the shot of ``summary`` (its recorded summary, from the run)
    from its base and its stored corrections, and return the shot's new summary.

    The base is the shot file as the run wrote it: kept under ``_corrections/`` the
    first time a correction applies, replaced whenever the shot file is a new run's
    (it holds no corrections). Without corrections nothing changes."""
    start = time.perf_counter()
    episode_dir = Path(episode_dir)
    index = summary.shot.index
    current, base = shot_path(episode_dir, index), base_shot_path(episode_dir, index)
    corrections = load_corrections(episode_dir, index)
    if not corrections:
        return summary
    if not applied(current):
        write_atomic(base, current.read_bytes())
    elif not base.exists():
        raise CelmaskError(base, "missing: the corrected shot's base is gone", f"re-run shot {index}, then correct")
    meta = read_shot_meta(base)
    table = pq.read_table(base, partitioning=None)
    config = apply(SegmentConfig(), json.loads(meta.config_json), where=str(base))
    stale = stale_corrections(corrections, meta, set(pc.unique(table.column("track_id")).to_pylist()))
    for c, why in stale.items():
        log.warning("%s: correction %s no longer applies: %s", episode_dir.name, c.file, why)
    good = [c for c in corrections if c not in stale]
    deleted = {c.track for c in good if c.kind == "delete"}
    by_track: dict[int, list[Correction]] = {}
    for c in good:
        if c.kind == "mask":
            by_track.setdefault(c.track, []).append(c)
    drawings = _decode(video, meta, config) if by_track else None
    rows = rebuild_tracks(table, meta, config, by_track, drawings) if drawings else []
    keep = pc.invert(pc.is_in(table.column("track_id"), pa.array(sorted(deleted | set(by_track)), pa.int32())))
    out = pa.concat_tables([table.filter(keep), pa.Table.from_pylist(rows, schema=SHOT_SCHEMA)])
    out = out.take(pc.sort_indices(out, [("frame_index", "ascending"), ("track_id", "ascending")]))
    tracks = len(pc.unique(out.column("track_id")))
    record = {
        "hash": corrections_hash(corrections),
        "applied": [c.file for c in good],
        "stale": [{"file": c.file, "why": why} for c, why in stale.items()],
    }
    _write(current, out, replace(meta, rows=out.num_rows, tracks=tracks), record)
    _write_sheet(episode_dir, summary, drawings)
    run_keys = [k for k in summary.keyframes if CORRECTED_KEY not in k.components and k.track_id not in deleted]
    keyframes = tuple(run_keys) + tuple(
        Keyframe(c.track, c.frame, 1.0, {CORRECTED_KEY: 1.0}) for t in sorted(by_track) for c in by_track[t]
    )
    seconds = {**summary.seconds, "correct": round(time.perf_counter() - start, 4)}
    return replace(summary, rows=out.num_rows, tracks=tracks, keyframes=keyframes, seconds=seconds)


def stale_corrections(corrections: list[Correction], meta: ShotMeta, tracks: set[int]) -> dict[Correction, str]:
    """The corrections that no longer fit the shot as segmented, and why."""
    shot = meta.shot
    deleted = {c.track for c in corrections if c.kind == "delete"}
    tracks = tracks | {c.track for c in corrections if c.new_track}
    out = {}
    for c in corrections:
        if c.track not in tracks:
            out[c] = f"the shot has no track {c.track} any more"
        elif c.kind == "mask" and not shot.start <= c.frame < shot.end:
            out[c] = f"frame {c.frame} is no longer in the shot [{shot.start}, {shot.end})"
        elif c.kind == "mask" and (c.height, c.width) != tuple(meta.source_size):
            out[c] = f"the mask is {c.width}x{c.height}, the video {meta.source_size[1]}x{meta.source_size[0]}"
        elif c.kind == "mask" and c.track in deleted:
            out[c] = f"track {c.track} is deleted"
    return out


def _write(path: Path, table: pa.Table, meta: ShotMeta, record: dict) -> None:
    schema = SHOT_SCHEMA.with_metadata(
        {**meta.to_metadata(), META_KEY: json.dumps(record, sort_keys=True, separators=(",", ":"))}
    )
    table = table.cast(schema)
    with atomic_file(path) as fh, pq.ParquetWriter(fh, schema, **WRITER_OPTIONS) as writer:
        for offset in range(0, max(table.num_rows, 1), ROW_GROUP_ROWS):
            writer.write_table(table.slice(offset, ROW_GROUP_ROWS))


@dataclass(frozen=True)
class _Drawings:
    """A shot decoded again as its run saw it: unique drawings at working size."""

    images: list[np.ndarray]
    frames: list[int]
    times: list[float]
    drawing_of: dict[int, int]
    """frame -> its drawing (index into ``images``)."""


def _decode(video: str | Path, meta: ShotMeta, config: SegmentConfig) -> _Drawings:
    info = probe(video)
    if info.fingerprint != meta.video_fingerprint:
        raise CelmaskError(
            video,
            f"is not the video shot {meta.shot.index} was segmented from (fingerprint {info.fingerprint}, "
            f"the manifest's {meta.video_fingerprint})",
            "pass the episode's source video with --video",
        )
    (height, width), shot = meta.work_size, meta.shot
    hold = HoldConfig(config.hold_threshold, config.hold_block) if config.hold_reuse else None
    kept, frames, times, drawing = unique_drawings(
        iter_frames(video, start=shot.start, end=shot.end, width=width, height=height), hold
    )
    return _Drawings([f.image for f in kept], frames, times, dict(zip(frames, drawing)))


def _write_sheet(episode_dir: Path, summary: ShotSummary, drawings: _Drawings | None) -> None:
    """The shot's contact sheet, of the corrected masks, from the drawings decoded for
    them; without those the old sheet goes (the report draws the shot from the video)."""
    path = sheet_path(episode_dir, summary.shot.index)
    if drawings is None:
        remove_durably(path)
        return
    shot = read_shot_rows(shot_path(episode_dir, summary.shot.index))
    size = still_size(shot.size)
    stills = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in drawings.images]
    write_atomic(path, jpeg(contact_sheet(summary, shot, _Stills(stills, drawings.drawing_of), size)))


@dataclass(frozen=True)
class _Stills:
    """Frames of a shot by index, from its drawings (a contact sheet's source)."""

    stills: list[np.ndarray]
    drawing_of: dict[int, int]

    def get(self, index: int) -> np.ndarray:
        return self.stills[self.drawing_of[index]]


def rebuild_tracks(
    table: pa.Table,
    meta: ShotMeta,
    config: SegmentConfig,
    by_track: dict[int, list[Correction]],
    drawings: _Drawings,
) -> list[dict]:
    """Rows of SHOT_SCHEMA for every track of ``by_track`` (track -> its mask
    corrections), from the base ``table`` and the corrections carried through the
    shot's ``drawings``."""
    base = table.to_pydict()
    propagator, refiner = build_followers(config)
    rows: list[dict] = []
    for track, corrections in sorted(by_track.items()):
        mine = [i for i, t in enumerate(base["track_id"]) if t == track]
        run_masks: dict[int, np.ndarray] = {}
        run_keys: dict[int, int | None] = {}
        for i in mine:
            d = drawings.drawing_of[base["frame_index"][i]]
            if d not in run_masks:
                run_masks[d] = _shrink(decode_mask(base["mask_rle"][i], *meta.source_size), meta.work_size)
                run_keys[d] = base["keyframe_frame"][i]
        exact = {c.frame: c.mask() for c in corrections}
        key_frame: dict[int, int] = {}
        for c in corrections:  # a drawing corrected on two of its frames is carried from the first
            key_frame.setdefault(drawings.drawing_of[c.frame], c.frame)
        corrected = {d: _shrink(exact[f], meta.work_size) for d, f in key_frame.items()}
        carried = carry_corrections(propagator, drawings.images, run_masks, run_keys, corrected, config.propagation)
        refined = _refine(refiner, drawings.images, carried, set(corrected), track)
        label = base["label"][mine[0]] if mine else LABELS[0]
        by_frame = {base["frame_index"][i]: i for i in mine}
        encoded: dict[int, tuple] = {}
        for frame, t in zip(drawings.frames, drawings.times):
            d = drawings.drawing_of[frame]
            if d not in carried.mask:
                if frame in by_frame:
                    rows.append({k: v[by_frame[frame]] for k, v in base.items()})
                continue
            key_at = key_frame[carried.keyframe[d]]
            if d in corrected:
                key_at = frame if frame in exact else key_at
                source, score = Source.CORRECTED, 1.0
                bbox, area, rle = _encode(exact[key_at], (0, 0), meta.source_size)
            else:
                if d not in encoded:
                    window, top, left = upscale_window(carried.mask[d], meta.source_size)
                    encoded[d] = _encode(window, (top, left), meta.source_size)
                bbox, area, rle = encoded[d]
                source, score = (Source.REFINED if d in refined else Source.PROPAGATED), carried.confidence[d]
            rows.append(
                {
                    "episode_id": meta.episode_id,
                    "shot_index": meta.shot.index,
                    "frame_index": frame,
                    "pts_time": t,
                    "track_id": track,
                    "label": label,
                    "score": round(float(score), 6),
                    "source": source.label,
                    "is_keyframe": d in corrected and frame == key_at,
                    "keyframe_frame": key_at,
                    "keyframe_distance": abs(frame - key_at),
                    "bbox": list(bbox),
                    "area": area,
                    "height": meta.source_size[0],
                    "width": meta.source_size[1],
                    "mask_rle": rle,
                }
            )
    return rows


def _shrink(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` at (height, width) ``size`` (working resolution)."""
    if mask.shape == tuple(size):
        return mask
    return cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA) >= 0.5


def _encode(window: np.ndarray, top_left: tuple[int, int], size: tuple[int, int]) -> tuple:
    """(bbox, area, RLE string) of a mask that is ``window`` at ``top_left`` in a frame of ``size``."""
    runs = window_runs(window, top_left[0], top_left[1], *size)
    area, bbox = rle_geometry(runs, size[0])
    return bbox, area, runs_string(runs, *size)


def _refine(refiner, images: list[np.ndarray], carried, corrected: set[int], track: int) -> set[int]:
    """Refine the carried (not corrected) masks in place; the steps it changed."""
    steps = [s for s in sorted(carried.mask) if s not in corrected]
    if refiner is None or not steps:
        return set()
    insts = [
        Instances.from_masks(carried.mask[s][None], score=np.ones(1, np.float32), track_id=np.array([track], np.int32))
        for s in steps
    ]
    out = set()
    for s, r in zip(steps, refiner.refine([images[s] for s in steps], insts)):
        if r.data["refined"][0]:
            carried.mask[s] = r.mask[0]
            out.add(s)
    return out
