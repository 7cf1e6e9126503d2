"""An episode's cast, computed in its finish step: every track gets its character.

1. **Signatures, per shot** (:func:`shot_signatures`): per track, :data:`SAMPLES`
   of its drawings spread over the :data:`SPAN` frames either side of its largest
   mask, among those whose mask is at least :data:`FULL_SHARE` of the largest (an
   occluded or half-off-screen drawing shows other colours), are decoded at :data:`DECODE_LONG` pixels and described
   (:mod:`celmask.tasks.cast.signature`). They depend on that shot alone, so they
   are kept in ``_run/cast_NNNN.json`` keyed by the shot file's bytes: finishing
   again after one shot was re-run decodes that shot only.
2. **Clusters, per episode** (:mod:`celmask.tasks.cast.cluster`): tracks of one shot
   never merge; enrolled references (``--cast DIR``) name the clusters they join.
3. **Ids**: the previous cast (``_tracks.parquet``) anchors every track of a shot
   file that did not change, so a re-run of one shot re-assigns its tracks and
   renumbers nobody; a cluster of re-run tracks only takes back their old id when
   it is free, other new characters get ids never used, by first appearance (a
   first run numbers all by first appearance). A changed enrolment or signature
   version starts afresh.

Tracks whose signature had no usable pixels, or whose confidence is under
:data:`MIN_CONFIDENCE`, stay unassigned (null); an anchored track keeps its
character (a re-run of another shot takes nobody's id away). Deterministic: signatures are
rounded before use, so computed and cached ones cluster alike. Memory: one shot's
rows and its sampled frames at a time, plus a few kB per track.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from celmask.tasks.cast.cluster import cluster
from celmask.tasks.cast.enrol import Enrolment, read_enrolment
from celmask.tasks.cast.signature import PARTS, SIZE, partial_distances, spread, stacked_signature
from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.cast import (
    Character,
    TrackCharacter,
    file_key,
    has_cast,
    read_cast_info,
    read_tracks,
    write_cast,
)
from celmask.tasks.manifest.layout import signature_path
from celmask.tasks.manifest.read import Row, ShotRows, read_shot_rows
from celmask.tasks.manifest.schema import read_shot_meta, shot_files
from celmask.tasks.video import iter_frames

SIGNATURE_VERSION = 3
"""Bump when signatures change: cached ones are then recomputed and ids start afresh."""
SAMPLES = 4
FULL_SHARE = 0.6
SPAN = 36
"""Frames either side of a track's largest mask its samples come from."""
DECODE_LONG = 640
"""Long side, in pixels, at which sampled frames are decoded and described."""
THRESHOLD = 0.3
"""Largest average signature distance at which two clusters merge. On true masks
0.3-0.35 separate best; on whole runs (predicted masks bleed a little background)
0.3 (bench/cast.py, tuned on seeds 1000-1002)."""
MIN_CONFIDENCE = 0.3
"""A track less sure than this of its character stays unassigned: on whole runs,
duplicate and switching tracks are what it leaves out (0.1 kept them: real-art F1
0.80 instead of 0.95 on the tuning runs)."""
UNCERTAIN_CONFIDENCE = 0.25
UNCERTAIN_MERGE = 0.85 * THRESHOLD
UNCERTAIN_SPREAD = 0.2
"""A character is flagged uncertain when a member's confidence is under
UNCERTAIN_CONFIDENCE, it took in a track at a distance over UNCERTAIN_MERGE, or a
member's drawings disagree by more than UNCERTAIN_SPREAD (on generated and real-art
runs, tracks that switched characters measure 0.21-0.24, sound ones mostly < 0.15)."""
DIGITS = 6
THUMB_HEIGHT = 96
THUMB_GREY = 96


@dataclass(frozen=True)
class TrackSignature:
    """What the cast needs of one track of one shot."""

    track_id: int
    first_frame: int
    last_frame: int
    frames: int
    pixels: int
    keyframe: int
    """The sampled frame of its largest mask: the track's picture in the cast."""
    key_area: int
    signature: np.ndarray
    """(1 + len(PARTS), SIZE) float64, rounded to DIGITS."""
    spread: float = 0.0
    """How much its drawings' colours disagree (:func:`~celmask.tasks.cast.signature.spread`)."""
    thumb: str = ""
    """Its largest sampled mask cut out on grey, THUMB_HEIGHT px tall, base64 JPEG (the QC report's cast strip)."""


# --------------------------------------------------------------------------- signatures


def _samples(rows: list[Row]) -> list[Row]:
    """SAMPLES rows of one track: distinct drawings, big enough, spread over the
    SPAN frames either side of its largest mask (decoding is the cast's cost)."""
    largest = max(rows, key=lambda r: (r.area, -r.frame_index))
    seen, good = set(), []
    for r in rows:
        near = abs(r.frame_index - largest.frame_index) <= SPAN
        if near and r.area >= FULL_SHARE * largest.area and r.rle not in seen:
            seen.add(r.rle)
            good.append(r)
    picks = np.unique(np.linspace(0, len(good) - 1, min(SAMPLES, len(good))).round().astype(int))
    return [good[i] for i in picks]


def decode_size(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) frames of (height, width) ``size`` are described at."""
    h, w = size
    scale = min(1.0, DECODE_LONG / max(h, w))
    return max(2, round(w * scale)), max(2, round(h * scale))


def shot_signatures(shot: ShotRows, video: str | Path) -> list[TrackSignature]:
    """Signatures of every track of ``shot``, decoding only the frames sampled."""
    tracks: dict[int, list[Row]] = {}
    for r in shot.rows:
        if r.area:
            tracks.setdefault(r.track_id, []).append(r)
    samples = {t: _samples(rows) for t, rows in tracks.items()}
    wanted = {r.frame_index for rows in samples.values() for r in rows}
    width, height = decode_size(shot.size)
    images: dict[int, np.ndarray] = {}
    if wanted:
        frames = iter_frames(video, width=width, height=height, start=min(wanted), end=max(wanted) + 1, deblock=False)
        try:
            for frame in frames:
                if frame.index in wanted:
                    images[frame.index] = frame.image
        finally:
            frames.close()
    out = []
    for t, rows in sorted(tracks.items()):
        drawings = [
            (images[r.frame_index], _scaled(shot.mask(r.rle), (width, height)))
            for r in samples[t]
            if r.frame_index in images
        ]
        signature, pixels = stacked_signature(drawings)
        disagree = round(spread(drawings), 4)
        key = max(samples[t], key=lambda r: (r.area, -r.frame_index))
        picture = (
            thumbnail(images[key.frame_index], _scaled(shot.mask(key.rle), (width, height)))
            if key.frame_index in images
            else ""
        )
        out.append(
            TrackSignature(
                t,
                rows[0].frame_index,
                rows[-1].frame_index,
                len(rows),
                pixels,
                key.frame_index,
                key.area,
                np.round(signature.astype(np.float64), DIGITS),
                disagree,
                picture,
            )
        )
    return out


def thumbnail(image: np.ndarray, mask: np.ndarray) -> str:
    """``image`` under ``mask``, cropped to it, on grey, THUMB_HEIGHT px tall: base64 JPEG."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return ""
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop = np.where(mask[box][..., None], image[box], np.uint8(THUMB_GREY))
    height = THUMB_HEIGHT
    width = max(2, min(3 * height, round(crop.shape[1] * height / crop.shape[0])))
    buffer = io.BytesIO()
    Image.fromarray(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)).save(buffer, "JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def _scaled(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return mask
    return cv2.resize(mask.view(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128


def _to_json(s: TrackSignature) -> dict[str, Any]:
    flat = s.signature.reshape(-1)
    nonzero = np.flatnonzero(flat)
    return {
        "track_id": s.track_id,
        "first_frame": s.first_frame,
        "last_frame": s.last_frame,
        "frames": s.frames,
        "pixels": s.pixels,
        "keyframe": s.keyframe,
        "key_area": s.key_area,
        "shape": list(s.signature.shape),
        "index": nonzero.tolist(),
        "value": flat[nonzero].tolist(),
        "spread": s.spread,
        "thumb": s.thumb,
    }


def _from_json(d: dict[str, Any]) -> TrackSignature:
    flat = np.zeros(int(np.prod(d["shape"])), np.float64)
    flat[d["index"]] = d["value"]
    return TrackSignature(
        d["track_id"],
        d["first_frame"],
        d["last_frame"],
        d["frames"],
        d["pixels"],
        d["keyframe"],
        d["key_area"],
        flat.reshape(d["shape"]),
        d["spread"],
        d["thumb"],
    )


def cached_signatures(episode_dir: Path, index: int, key: str) -> list[TrackSignature] | None:
    """The signatures kept for shot ``index`` when they were made from the file ``key``."""
    try:
        data = json.loads(signature_path(episode_dir, index).read_text())
        if data.get("version") != SIGNATURE_VERSION or data.get("shot_file") != key:
            return None
        return [_from_json(t) for t in data["tracks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_signatures(episode_dir: Path, index: int, key: str, signatures: list[TrackSignature]) -> None:
    content = {"version": SIGNATURE_VERSION, "shot_file": key, "tracks": [_to_json(s) for s in signatures]}
    path = signature_path(episode_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(content, sort_keys=True, separators=(",", ":")) + "\n").encode())


# --------------------------------------------------------------------------- the cast


@dataclass(frozen=True)
class _Item:
    shot: int
    seconds_per_frame: float
    sig: TrackSignature


@dataclass(frozen=True)
class CastResult:
    tracks: list[TrackCharacter]
    cast: list[Character]
    info: dict[str, Any]
    decoded_shots: int
    """Shots whose signatures were computed (not cached) this time."""

    @property
    def summary(self) -> dict[str, int]:
        """The counts ``_SUCCESS.json`` records (and validate checks against the tables)."""
        return {
            "characters": len(self.cast),
            "tracks": len(self.tracks),
            "unassigned": sum(t.character_id is None for t in self.tracks),
        }


def _previous(episode_dir: Path, enrolment_key: str | None) -> tuple[dict[str, str], dict[tuple[int, int], Any]]:
    """(shot -> file key, (shot, track) -> anchor) of the previous cast, when it was
    made the same way; else nothing."""
    if not has_cast(episode_dir):
        return {}, {}
    try:
        info = read_cast_info(episode_dir)
        tracks = read_tracks(episode_dir)
    except CelmaskError:  # an unreadable previous cast: computed from scratch
        return {}, {}
    if info.get("signature_version") != SIGNATURE_VERSION or info.get("enrolment") != enrolment_key:
        return {}, {}
    anchors = {
        (t.shot_index, t.track_id): (("name", t.character) if t.character else ("id", t.character_id), t.character_id)
        for t in tracks
        if t.character_id is not None
    }
    return dict(info.get("shots", {})), anchors


def compute_cast(episode_dir: str | Path, video: str | Path | None) -> CastResult:
    """The cast of the episode's shot files from ``video`` (None: only signatures
    kept from earlier can be used; tracks of other shots stay unassigned) and the
    enrolment saved in ``_run/``."""
    episode_dir = Path(episode_dir)
    enrolment = read_enrolment(episode_dir)
    keys: dict[str, str] = {}
    items: list[_Item] = []
    missing: list[int] = []
    decoded = 0
    for index, path in shot_files(episode_dir).items():
        key = keys[str(index)] = file_key(path)
        signatures = cached_signatures(episode_dir, index, key)
        if signatures is None:
            shot = read_shot_rows(path)
            if video is None:
                missing.append(index)
                signatures = _bare(shot)
            else:
                signatures = shot_signatures(shot, video)
                save_signatures(episode_dir, index, key, signatures)
                decoded += 1
        shot_range = read_shot_meta(path).shot
        per_frame = max(0.0, shot_range.end_time - shot_range.start_time) / shot_range.frame_count
        items += [_Item(index, per_frame, s) for s in signatures]
    old_keys, old_anchors = _previous(episode_dir, enrolment.key if enrolment else None)
    anchors = {
        (i.shot, i.sig.track_id): old_anchors[i.shot, i.sig.track_id]
        for i in items
        if old_keys.get(str(i.shot)) == keys[str(i.shot)] and (i.shot, i.sig.track_id) in old_anchors
    }
    hints = {k: v[1] for k, v in old_anchors.items() if k not in anchors}
    tracks, cast = assign(items, enrolment, anchors, hints)
    info = {
        "signature_version": SIGNATURE_VERSION,
        "threshold": THRESHOLD,
        "min_confidence": MIN_CONFIDENCE,
        "shots": keys,
        "enrolment": enrolment.key if enrolment else None,
        "missing_signatures": missing,
    }
    write_cast(episode_dir, tracks, cast, info)
    return CastResult(tracks, cast, info, decoded)


def _bare(shot: ShotRows) -> list[TrackSignature]:
    """Tracks of ``shot`` without pixels to describe them (no video): counts only."""
    tracks: dict[int, list[Row]] = {}
    for r in shot.rows:
        if r.area:
            tracks.setdefault(r.track_id, []).append(r)
    return [
        TrackSignature(
            t,
            rows[0].frame_index,
            rows[-1].frame_index,
            len(rows),
            0,
            rows[0].frame_index,
            0,
            np.zeros((1 + len(PARTS), SIZE)),
        )
        for t, rows in sorted(tracks.items())
    ]


def assign(
    items: list[_Item],
    enrolment: Enrolment | None,
    anchors: dict[tuple[int, int], tuple[Any, int]],
    hints: dict[tuple[int, int], int] | None = None,
) -> tuple[list[TrackCharacter], list[Character]]:
    """Cluster ``items`` (with the enrolled references) and number the characters:
    anchored clusters keep their previous id; a new cluster takes the id its tracks
    had before (``hints``: re-run shots' previous ids) while no other cluster holds
    it, else the next id never used, by first appearance."""
    hints = hints or {}
    usable = [i for i in items if i.sig.pixels > 0]
    refs = list(enrolment.names) if enrolment else []
    stacks = [enrolment.signatures[k] for k in range(len(refs))] if enrolment else []
    stacks += [i.sig.signature for i in usable]
    groups = [-1 - k for k in range(len(refs))] + [i.shot for i in usable]
    anchor_keys = [("name", name) for name in refs] + [
        anchors.get((i.shot, i.sig.track_id), (None, None))[0] for i in usable
    ]
    distance = partial_distances(np.asarray(stacks).reshape(len(stacks), -1, stacks[0].shape[-1])) if stacks else None
    result = cluster(distance, groups, THRESHOLD, anchor_keys) if stacks else None
    by_item: dict[tuple[int, int], tuple[int, float]] = {}
    members: dict[int, list[_Item]] = {}
    names: dict[int, str] = {}
    for n, label in enumerate(result.labels if result else []):
        if n < len(refs):
            names[label] = refs[n]
            continue
        item = usable[n - len(refs)]
        confidence = round(result.confidence[n], 4)
        by_item[item.shot, item.sig.track_id] = (label, confidence)
        anchored = (item.shot, item.sig.track_id) in anchors
        if confidence >= MIN_CONFIDENCE or anchored:
            members.setdefault(label, []).append(item)
    kept = {(i.shot, i.sig.track_id) for group in members.values() for i in group}
    # ids: an anchored cluster keeps its previous id; the rest by first appearance
    ids: dict[int, int] = {}
    for label, group in members.items():
        old = [anchors[i.shot, i.sig.track_id][1] for i in group if (i.shot, i.sig.track_id) in anchors]
        if old:
            ids[label] = min(old)
    next_id = max([a[1] for a in anchors.values()] + list(hints.values()), default=-1) + 1
    for label in sorted(set(members) - set(ids), key=lambda c: min((i.shot, i.sig.track_id) for i in members[c])):
        before = sorted(hints[k] for k in ((i.shot, i.sig.track_id) for i in members[label]) if k in hints)
        if before and before[0] not in ids.values():
            ids[label] = before[0]
        else:
            ids[label], next_id = next_id, next_id + 1
    tracks = []
    for item in items:
        label, confidence = by_item.get((item.shot, item.sig.track_id), (None, 0.0))
        assigned = (item.shot, item.sig.track_id) in kept and label in ids
        tracks.append(
            TrackCharacter(
                item.shot,
                item.sig.track_id,
                ids[label] if assigned else None,
                names.get(label) if assigned else None,
                confidence,
                item.sig.first_frame,
                item.sig.last_frame,
                item.sig.frames,
                item.sig.pixels,
            )
        )
    cast = []
    for label, group in members.items():
        confidence = min(by_item[i.shot, i.sig.track_id][1] for i in group)
        merge = round(result.merge_distance[label], 4)
        key = max(group, key=lambda i: (i.sig.key_area, -i.shot))
        signature = np.mean([i.sig.signature[0] for i in group], axis=0)
        cast.append(
            Character(
                ids[label],
                names.get(label),
                tuple(sorted({i.shot for i in group})),
                len(group),
                sum(i.sig.frames for i in group),
                round(sum(i.sig.frames * i.seconds_per_frame for i in group), 4),
                min(i.sig.first_frame for i in group),
                key.shot,
                key.sig.track_id,
                key.sig.keyframe,
                confidence,
                merge,
                confidence < UNCERTAIN_CONFIDENCE
                or merge > UNCERTAIN_MERGE
                or max(i.sig.spread for i in group) > UNCERTAIN_SPREAD,
                tuple(np.round(signature, DIGITS).astype(np.float32).tolist()),
            )
        )
    return tracks, sorted(cast, key=lambda c: c.character_id)


def character_thumbs(episode_dir: str | Path, cast: list[Character]) -> dict[int, bytes]:
    """character_id -> JPEG of its representative track (from the kept signatures;
    characters whose shot has none are left out)."""
    episode_dir = Path(episode_dir)
    out: dict[int, bytes] = {}
    for shot, group in itertools.groupby(sorted(cast, key=lambda c: c.keyframe_shot), key=lambda c: c.keyframe_shot):
        try:
            tracks = {
                t["track_id"]: t.get("thumb", "")
                for t in json.loads(signature_path(episode_dir, shot).read_text())["tracks"]
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for c in group:
            if tracks.get(c.keyframe_track):
                out[c.character_id] = base64.b64decode(tracks[c.keyframe_track])
    return out
