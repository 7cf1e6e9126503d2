"""``celmask export``: the mask manifest in the formats other tools read.

Per episode, into ``TO/<episode_id>/<format>/`` (default ``OUT/<episode_id>/_exports/<format>/``):

=========  =====================================================================
png        ``shot_<NNNN>/track_<TTT>/<frame>.png``: a 1-bit mask (PIL mode "1") per
           frame a track is in, at the video's size
palette    ``shot_<NNNN>/<frame>.png``: every frame of the shot as one DAVIS-style
           palette PNG (mode "P"), pixel = track id + 1, 0 = background; where
           masks overlap the higher track id wins
cutouts    ``shot_<NNNN>/track_<TTT>/<frame>.png``: the character cut out of the
           video frame, RGBA, cropped to its box, alpha = mask, colour 0 outside;
           once per drawing (held frames repeat it: the dataset wants it once)
coco       ``instances.json``, COCO instances (:mod:`celmask.tasks.outputs.coco`)
ytvis      ``instances.json``, YouTube-VIS, one video per shot (:mod:`celmask.tasks.outputs.coco`)
preview    ``shot_<NNNN>.mp4``: masks, track ids and keyframes over the video
           (:mod:`celmask.tasks.outputs.preview`)
=========  =====================================================================

``--character K`` (png, cutouts): only the tracks of the episode's character ``K``
(its ``character_id`` or enrolled name, ``_tracks.parquet``), into
``<format>_character_<KKK>/`` in the same layout.

``<frame>`` is the frame's index in the episode, six digits. Cut-outs and previews
need the source video's pixels: ``video``, or the one the episode's run recorded
(``_run/plan.json``), checked against the manifest's fingerprint. Every export streams
(one shot in memory), is deterministic (the same manifest and video give the same
bytes), and appears whole: it is written into a hidden directory beside its
destination and renamed over an earlier export of the same format when complete.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from celmask.tasks.core.atomic import staged_dir
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.cast import character_tracks
from celmask.tasks.manifest.layout import SUCCESS_NAME, exports_dir, shot_path
from celmask.tasks.manifest.read import (
    FRAME_NAME,
    MASK_CACHE,
    ShotRows,
    VideoFrames,
    iter_shots,
    shot_metas,
)
from celmask.tasks.manifest.schema import episode_dirs
from celmask.tasks.outputs.coco import write_coco, write_ytvis
from celmask.tasks.outputs.preview import write_previews

log = logging.getLogger("celmask.exports")

MASK_PNG_LEVEL = 6
"""zlib level of mask PNGs: flat images, a few kB each at any level."""
CUTOUT_PNG_LEVEL = 1
"""zlib level of cut-outs, which hold drawn pixels: level 1 encodes 2.5x faster than
6 for files 13% larger (measured on generated close-ups), and cut-outs are the
slowest export."""


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS and PASCAL VOC annotations, flat RGB: 1 is
    (128, 0, 0), 2 (0, 128, 0), ... so tools that colour by it show our tracks the same way."""
    out = []
    for i in range(256):
        r = g = b = 0
        for bit in range(8):
            r |= ((i >> (3 * bit)) & 1) << (7 - bit)
            g |= ((i >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((i >> (3 * bit + 2)) & 1) << (7 - bit)
        out += [r, g, b]
    return out


DAVIS_PALETTE = davis_palette()


def _png(image: Image.Image, level: int = MASK_PNG_LEVEL) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=level)
    return buffer.getvalue()


def _frame_path(dest: Path, shot: ShotRows, frame: int, track: int | None = None) -> Path:
    folder = dest / f"shot_{shot.meta.shot.index:04d}"
    if track is not None:
        folder /= f"track_{track:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{FRAME_NAME.format(frame)}.png"


def _mask_encoder(shot: ShotRows) -> Callable[[str], bytes]:
    """PNG bytes of a mask of ``shot`` from its RLE string, encoded once per distinct
    mask while it keeps coming (held frames)."""
    return lru_cache(maxsize=MASK_CACHE)(lambda rle: _png(Image.fromarray(shot.mask(rle))))


def _palette_encoder(shot: ShotRows) -> Callable[[tuple[tuple[int, str], ...]], bytes]:
    """Palette PNG bytes of a frame of ``shot`` from its (track id, RLE) pairs, in track
    order (a later track paints over an earlier one), encoded once per held drawing."""

    @lru_cache(maxsize=MASK_CACHE)
    def encode(tracks: tuple[tuple[int, str], ...]) -> bytes:
        index = np.zeros(shot.size, np.uint8)
        for track, rle in tracks:
            index[shot.mask(rle)] = track + 1
        image = Image.fromarray(index)
        image.putpalette(DAVIS_PALETTE)  # makes it mode "P"
        return _png(image)

    return encode


Tracks = set[tuple[int, int]]
"""(shot_index, track_id) of the tracks to export (one character's), None: all."""


def write_png(episode_dir: Path, dest: Path, video: str | Path | None = None, keep: Tracks | None = None) -> int:
    """A 1-bit PNG per row (of the ``keep`` tracks)."""
    files = 0
    for shot in iter_shots(episode_dir):
        encode = _mask_encoder(shot)
        for row in shot.rows:
            if keep is not None and (shot.meta.shot.index, row.track_id) not in keep:
                continue
            _frame_path(dest, shot, row.frame_index, row.track_id).write_bytes(encode(row.rle))
            files += 1
    return files


def write_palette(episode_dir: Path, dest: Path, video: str | Path | None = None) -> int:
    """A palette PNG per frame."""
    files = 0
    for shot in iter_shots(episode_dir):
        too_many = [r.track_id for r in shot.rows if r.track_id + 1 > 255]
        if too_many:
            raise CelmaskError(
                shot_path(episode_dir, shot.meta.shot.index),
                f"track {too_many[0]} does not fit a palette PNG (255 tracks at most)",
                "export --format png instead: one file per track",
            )
        encode = _palette_encoder(shot)
        for frame, rows in shot.frames():
            _frame_path(dest, shot, frame).write_bytes(encode(tuple((r.track_id, r.rle) for r in rows)))
            files += 1
    return files


def write_cutouts(episode_dir: Path, dest: Path, video: str | Path, keep: Tracks | None = None) -> int:
    """An RGBA cut-out per track (of the ``keep`` ones) and drawing (a row whose track
    had the same mask on the frame before is a held drawing: skipped)."""
    metas = shot_metas(episode_dir)
    if not metas:
        return 0
    frames = VideoFrames(video, metas)
    files = 0
    try:
        for shot in iter_shots(episode_dir):
            before: dict[int, str] = {}
            for frame, rows in shot.frames():
                fresh = [
                    r
                    for r in rows
                    if r.area
                    and before.get(r.track_id) != r.rle
                    and (keep is None or (shot.meta.shot.index, r.track_id) in keep)
                ]
                before = {r.track_id: r.rle for r in rows}
                if not fresh:
                    continue
                image = frames.get(frame)
                for r in fresh:
                    x, y, w, h = r.bbox
                    alpha = shot.mask(r.rle)[y : y + h, x : x + w]
                    rgba = np.dstack([image[y : y + h, x : x + w] * alpha[..., None], alpha.view(np.uint8) * 255])
                    _frame_path(dest, shot, frame, r.track_id).write_bytes(
                        _png(Image.fromarray(rgba), CUTOUT_PNG_LEVEL)
                    )
                    files += 1
    finally:
        frames.close()
    return files


BY_CHARACTER = ("png", "cutouts")


class Format(NamedTuple):
    write: Callable[[Path, Path, str | Path | None], int]
    """(episode dir, destination dir, video) -> files written."""
    needs_video: bool


FORMATS: dict[str, Format] = {
    "png": Format(write_png, False),
    "palette": Format(write_palette, False),
    "cutouts": Format(write_cutouts, True),
    "coco": Format(write_coco, False),
    "ytvis": Format(write_ytvis, False),
    "preview": Format(write_previews, True),
}


@dataclass(frozen=True)
class Exported:
    episode_id: str
    format: str
    path: Path
    files: int
    bytes: int
    seconds: float


def export_episode(
    episode_dir: Path, fmt: str, dest: Path, video: str | Path | None = None, keep: Tracks | None = None
) -> Exported:
    """Export one episode in format ``fmt`` into ``dest`` (replaced when complete),
    only the ``keep`` tracks when given (png and cutouts)."""
    start = time.perf_counter()
    if not (episode_dir / SUCCESS_NAME).exists():
        log.warning(
            "%s: no %s, so the episode may be incomplete; exporting the shots written so far", episode_dir, SUCCESS_NAME
        )
    with staged_dir(dest) as tmp:
        files = FORMATS[fmt].write(episode_dir, tmp, video, **({"keep": keep} if keep is not None else {}))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return Exported(episode_dir.name, fmt, dest, files, size, round(time.perf_counter() - start, 3))


def export(
    out: str | Path,
    fmt: str,
    *,
    episode: str | None = None,
    to: str | Path | None = None,
    video: str | Path | None = None,
    recorded_video: Callable[[Path], str | None] = lambda episode_dir: None,
    character: str | None = None,
) -> list[Exported]:
    """Export every episode of ``out`` (an output tree or one episode directory), or
    only ``episode``, in format ``fmt``; see the module docstring. Without ``video``,
    an episode's pixels come from ``recorded_video(episode_dir)`` (the run's record).
    ``character`` (an episode character_id or enrolled name): only its tracks, png or
    cutouts, into ``<format>_character_<KKK>/`` beside the whole export."""
    if fmt not in FORMATS:
        raise CelmaskError("--format", f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if character is not None and fmt not in BY_CHARACTER:
        raise CelmaskError(
            "--character",
            f"exports {' and '.join(BY_CHARACTER)} by character, not {fmt}",
            "use --format png or cutouts",
        )
    episodes = episode_dirs(out)
    if episode is not None:
        chosen = [e for e in episodes if e.name == episode]
        if not chosen:
            raise CelmaskError(
                "--episode", f"{out} has no episode {episode!r}", f"use one of {', '.join(e.name for e in episodes)}"
            )
        episodes = chosen
    if video is not None and len(episodes) > 1:
        raise CelmaskError(
            "--video", f"{out} holds {len(episodes)} episodes and a video belongs to one", "pass --episode ID"
        )
    videos = {e: video if video is not None else recorded_video(e) for e in episodes}
    missing = [e.name for e, v in videos.items() if v is None]
    if missing and FORMATS[fmt].needs_video:
        raise CelmaskError(
            "--video",
            f"--format {fmt} needs the source video's pixels and episode {missing[0]} has no "
            "recorded video that is still there unchanged",
            "pass --video PATH",
        )
    if character is None:
        return [export_episode(e, fmt, exports_dir(e, fmt, to), videos[e]) for e in episodes]
    out_list = []
    for e in episodes:
        cid, keep = character_tracks(e, character)
        out_list.append(export_episode(e, fmt, exports_dir(e, f"{fmt}_character_{cid:03d}", to), videos[e], keep))
    return out_list
