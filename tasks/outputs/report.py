"""The visual QC report of an episode: a static page to look at rather than read.

``<episode_dir>/_report/index.html`` has one row per shot of the episode table: a
contact sheet (the keyframes of its weakest tracks and frames sampled across the
shot, masks drawn as in the previews), its frames and transition, track count, the
score breakdown of every keyframe, the flags worth a look (:func:`shot_flags`), and
a link to the shot's preview video when ``celmask export --format preview`` has
written one. It opens from the file system (no server, no script; the "flagged
only" switch is CSS), and stays light for a 300-shot episode: one small JPEG strip
per shot in ``_report/thumbs/``, loaded lazily, and a few kB of HTML per shot.

At the top, the episode's cast (:func:`cast_strip`): one thumbnail per character
with the shots it appears in, linked to their rows, uncertain ones flagged.

Each shot's run leaves its contact sheet, made from the drawings it already had in
memory (``_run/contact_NNNN.jpg``); the report copies those and decodes the source
video (``video``, checked against the manifest's fingerprint, once, at thumbnail
size) only for shots without one; without either the masks are drawn on grey.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from celmask.tasks.cast.episode import character_thumbs
from celmask.tasks.core.atomic import staged_dir
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.types import KEYFRAME_COMPONENTS, STILL_HEIGHT, Source, still_size
from celmask.tasks.manifest.cast import has_cast, read_cast, read_tracks
from celmask.tasks.manifest.corrections import applied
from celmask.tasks.manifest.layout import (
    INDEX_NAME,
    SUCCESS_NAME,
    THUMBS_DIR,
    exports_dir,
    report_dir,
    sheet_path,
    shot_path,
)
from celmask.tasks.manifest.read import (
    Row,
    ShotRows,
    VideoFrames,
    iter_shots,
    shot_metas,
)
from celmask.tasks.manifest.schema import (
    Keyframe,
    ShotSummary,
    episode_dirs,
    read_episode_table,
)
from celmask.tasks.outputs.preview import KEY_COLOUR, draw_overlay, track_colour

SAMPLES = 4
"""Frames sampled evenly across a shot, first and last included."""
KEY_TILES = 2
"""Keyframes shown per shot: those of the lowest-scoring tracks."""
JPEG_QUALITY = 80
LOW_SCORE = 0.6
"""A keyframe scoring less is flagged: its track's masks all come from a doubtful one."""
WEAK = 0.5
"""A score component under this is named in the flag and shown red."""
GOOD = 0.8
"""A score or component from this up is shown green (between WEAK and GOOD: yellow)."""
JUMP_AREA = 1.5
JUMP_MOVE = 1.5
"""A track's mask jumps when, between consecutive frames and away from the frame edge,
its area changes by more than JUMP_AREA times or its box centre moves more than
JUMP_MOVE box diagonals. Not overlap: a thin character running on 3s overlaps its
previous drawing by nothing (measured on generated episodes), yet keeps its size."""
EDGE = 0.02
"""Share of the frame size within which a box touches the frame edge (a character
leaving the picture), so its track ending there is no vanishing."""
EMPTY_GREY = 64


@dataclass(frozen=True)
class Flag:
    """Something in a shot worth a look: ``kind`` (failed, empty, low-score, jump,
    gap, vanish) and a one-line explanation."""

    kind: str
    text: str


# --------------------------------------------------------------------------- flags


def _at_edge(bbox: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    x, y, w, h = bbox
    mh, mw = EDGE * size[0], EDGE * size[1]
    return x <= mw or y <= mh or x + w >= size[1] - mw or y + h >= size[0] - mh


def _jump(a: Row, b: Row) -> tuple[float, float]:
    """(area ratio, centre move in box diagonals) between two rows of a track."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a.bbox, b.bbox
    move = math.hypot(bx + bw / 2 - ax - aw / 2, by + bh / 2 - ay - ah / 2) / max(
        1.0, math.hypot(aw, ah), math.hypot(bw, bh)
    )
    return max(a.area, b.area) / max(1, min(a.area, b.area)), move


def track_flags(shot: ShotRows) -> list[Flag]:
    """Per track of ``shot``: masks that jump between consecutive frames, frames
    missing inside the track's span, and a track ending before the shot does away
    from the frame edge."""
    flags = []
    end, size = shot.meta.shot.end, shot.size
    tracks = itertools.groupby(sorted(shot.rows, key=lambda r: (r.track_id, r.frame_index)), key=lambda r: r.track_id)
    for track, group in tracks:
        rows = list(group)
        jumps = []
        for a, b in itertools.pairwise(rows):
            if (
                b.frame_index == a.frame_index + 1
                and a.rle != b.rle
                and not (_at_edge(a.bbox, size) or _at_edge(b.bbox, size))
            ):
                ratio, move = _jump(a, b)
                if ratio > JUMP_AREA or move > JUMP_MOVE:
                    jumps.append((ratio, move, b.frame_index))
        if jumps:
            ratio, move, frame = max(jumps)
            flags.append(
                Flag(
                    "jump",
                    f"track {track}: mask jumps {len(jumps)}x, worst at frame {frame} "
                    f"(area x{ratio:.1f}, centre moved {move:.1f} box diagonals)",
                )
            )
        gaps = [
            (a.frame_index + 1, b.frame_index) for a, b in itertools.pairwise(rows) if b.frame_index > a.frame_index + 1
        ]
        if gaps:
            flags.append(
                Flag(
                    "gap",
                    f"track {track}: missing in {sum(b - a for a, b in gaps)} frame(s) inside its span, "
                    f"first {gaps[0][0]}-{gaps[0][1] - 1}",
                )
            )
        if rows[-1].frame_index < end - 1 and not _at_edge(rows[-1].bbox, size):
            flags.append(
                Flag(
                    "vanish",
                    f"track {track}: vanishes after frame {rows[-1].frame_index}, "
                    f"{end - 1 - rows[-1].frame_index} frame(s) before the shot ends, away from the frame edge",
                )
            )
    return flags


def shot_flags(summary: ShotSummary, shot: ShotRows | None) -> list[Flag]:
    """Everything worth a look in one shot: it failed, found no character, has a
    keyframe scoring under LOW_SCORE, or a track that jumps, has gaps or vanishes."""
    if summary.status != "ok":
        return [Flag("failed", f"failed: {summary.error or 'no error recorded'}")]
    if summary.rows == 0:
        return [Flag("empty", "no character found in any frame")]
    flags = []
    for k in summary.keyframes:
        if k.score < LOW_SCORE:
            weak = ", ".join(
                f"{name} {v:.2f}" for name, v in sorted(k.components.items(), key=lambda kv: kv[1]) if v < WEAK
            )
            flags.append(
                Flag(
                    "low-score",
                    f"track {k.track_id}: keyframe {k.frame_index} scores {k.score:.2f}"
                    + (f" (weak: {weak})" if weak else ""),
                )
            )
    return flags + (track_flags(shot) if shot is not None else [])


def correction_flags(episode_dir: Path, shot: ShotRows | None) -> list[Flag]:
    """The tracks of a shot corrected by hand (``celmask correct``), and its corrections
    that no longer apply after a re-run."""
    if shot is None:
        return []
    frames: dict[int, list[int]] = {}
    for r in shot.rows:
        if r.is_keyframe and r.source == Source.CORRECTED.label:
            frames.setdefault(r.track_id, []).append(r.frame_index)
    record = applied(shot_path(episode_dir, shot.meta.shot.index))
    return [
        Flag("corrected", f"track {t}: corrected by hand on frame{'s' if len(f) > 1 else ''} {', '.join(map(str, f))}")
        for t, f in sorted(frames.items())
    ] + [Flag("stale", f"correction {c['file']} no longer applies: {c['why']}") for c in record.get("stale", [])]


# --------------------------------------------------------------------------- contact sheets


def contact_frames(summary: ShotSummary) -> list[tuple[int, bool]]:
    """(frame, is a keyframe) of the contact sheet of a shot, in frame order: the main
    keyframes of its KEY_TILES lowest-scoring tracks and SAMPLES frames across it."""
    main: dict[int, Keyframe] = {}
    for k in summary.keyframes:
        main.setdefault(k.track_id, k)
    keys = {k.frame_index for k in sorted(main.values(), key=lambda k: (k.score, k.track_id))[:KEY_TILES]}
    shot = summary.shot
    samples = {int(f) for f in np.linspace(shot.start, shot.end - 1, SAMPLES).round()}
    return [(f, f in keys) for f in sorted(keys | samples)]


def _tile(background: np.ndarray, shot: ShotRows | None, rows: Sequence[Row], frame: int, key: bool) -> np.ndarray:
    tile = draw_overlay(background, shot, rows, f"{frame} KEY" if key else str(frame)) if shot else background.copy()
    if key:
        cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), KEY_COLOUR, 2)
    return tile


def contact_sheet(
    summary: ShotSummary, shot: ShotRows | None, frames: VideoFrames | None, size: tuple[int, int]
) -> np.ndarray:
    """The tiles of :func:`contact_frames`, (width, height) = ``size`` each, side by side."""
    rows = {f: r for f, r in shot.frames()} if shot else {}
    tiles = []
    for frame, key in contact_frames(summary):
        background = frames.get(frame) if frames else np.full((size[1], size[0], 3), EMPTY_GREY, np.uint8)
        tiles.append(_tile(background, shot, rows.get(frame, []), frame, key))
    gap = np.full((size[1], 2, 3), 255, np.uint8)
    return np.hstack([part for tile in tiles for part in (tile, gap)][:-1])


def jpeg(sheet: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML


STYLE = """
body{font:13px/1.35 system-ui,sans-serif;margin:0;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #bbb;padding:6px 12px;z-index:1}
h1{font-size:17px;margin:0 0 4px}
section.shot{border-bottom:1px solid #ddd;padding:6px 12px}
section.flagged{background:#fff8e6}section.failed{background:#fdecec}
.head{margin-bottom:4px}.head b{font-size:14px}
.body{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:flex-start}
img{display:block;max-width:100%;height:auto;background:#eee}
.kf{border-collapse:collapse;font-size:11px}.kf td,.kf th{padding:1px 4px;text-align:right}
.hi{background:#d9f2d9}.mid{background:#fff2b3}.lo{background:#f7c6c6}
.swatch{display:inline-block;width:9px;height:9px;margin-right:3px}
ul.flags{margin:4px 0 0;padding-left:16px}
li.failed,li.empty,li.vanish,li.stale{color:#a00}li.corrected{color:#070}li.jump,li.gap,li.low-score{color:#960}
body:has(#flagged-only:checked) section.shot:not(.flagged){display:none}
section.cast{display:flex;flex-wrap:wrap;gap:8px;padding:6px 12px;border-bottom:1px solid #bbb}
figure.who{margin:0;max-width:180px;font-size:11px}figure.uncertain{background:#fff2b3}
"""
SHORT = {
    "confidence": "conf",
    "quality": "qual",
    "size": "size",
    "completeness": "compl",
    "sharpness": "sharp",
    "agreement": "agree",
    "position": "pos",
}


def _level(value: float) -> str:
    return "lo" if value < WEAK else "mid" if value < GOOD else "hi"


def _keyframe_table(keyframes: Sequence[Keyframe]) -> str:
    if not keyframes:
        return ""
    head = "".join(f"<th>{SHORT.get(c, c)}</th>" for c in KEYFRAME_COMPONENTS)
    body = "".join(
        f'<tr><td><span class=swatch style="background:rgb{track_colour(k.track_id)}"></span>{k.track_id}</td>'
        f"<td>{k.frame_index}</td><td class={_level(k.score)}><b>{k.score:.2f}</b></td>"
        + "".join(
            f"<td class={_level(k.components[c])}>{k.components[c]:.2f}</td>" if c in k.components else "<td></td>"
            for c in KEYFRAME_COMPONENTS
        )
        + "</tr>"
        for k in keyframes
    )
    return f"<table class=kf><tr><th>track</th><th>frame</th><th>score</th>{head}</tr>{body}</table>"


def _shot_html(summary: ShotSummary, flags: list[Flag], thumb: tuple[str, int, int] | None, preview: str | None) -> str:
    s = summary.shot
    classes = " ".join(["shot"] + (["flagged"] if flags else []) + (["failed"] if summary.status != "ok" else []))
    image = (
        f'<img src="{thumb[0]}" width={thumb[1]} height={thumb[2]} loading=lazy decoding=async '
        f'alt="shot {s.index} contact sheet">'
        if thumb
        else "<i>no frames to show</i>"
    )
    link = f' &middot; <a href="{html.escape(preview)}">preview video</a>' if preview else ""
    items = "".join(f"<li class={f.kind}>{html.escape(f.text)}</li>" for f in flags)
    return (
        f'<section id="shot-{s.index}" class="{classes}"><div class=head><a href="#shot-{s.index}"><b>shot {s.index}</b></a> '
        f"&middot; {s.transition} &middot; frames {s.start}-{s.end - 1} &middot; {s.start_time:.2f}-{s.end_time:.2f} s "
        f"&middot; {summary.tracks} track{'' if summary.tracks == 1 else 's'} "
        f"&middot; {sum(summary.seconds.values()):.1f} s to segment{link}</div>"
        f"<div class=body>{image}<div>{_keyframe_table(summary.keyframes)}<ul class=flags>{items}</ul></div></div></section>"
    )


def cast_strip(episode_dir: Path, tmp: Path) -> str:
    """The cast's HTML (thumbnails written into ``tmp``): per character its picture,
    id and name, tracks and screen time, links to its shots; "uncertain" when a
    member is barely its own or may hold two characters. Empty without a cast."""
    if not has_cast(episode_dir):
        return ""
    cast, tracks = read_cast(episode_dir), read_tracks(episode_dir)
    thumbs = character_thumbs(episode_dir, cast)
    figures = []
    for c in cast:
        name = f"{THUMBS_DIR}/character_{c.character_id:03d}.jpg"
        image = ""
        if c.character_id in thumbs:
            (tmp / name).write_bytes(thumbs[c.character_id])
            image = f'<img src="{name}" height=96 alt="character {c.character_id}">'
        links = " ".join(f'<a href="#shot-{i}">{i}</a>' for i in c.shots)
        who = f"#{c.character_id}" + (f" {html.escape(c.character)}" if c.character else "")
        flag = f" &middot; <b>uncertain</b> (confidence {c.confidence:.2f})" if c.uncertain else ""
        figures.append(
            f'<figure class="who{" uncertain" if c.uncertain else ""}" id="character-{c.character_id}">{image}'
            f"<figcaption><b>{who}</b> &middot; {c.tracks} track{'' if c.tracks == 1 else 's'}, "
            f"{c.screen_time:.1f} s{flag}<br>shots {links}</figcaption></figure>"
        )
    unassigned = sum(t.character_id is None for t in tracks)
    note = f"<div>{unassigned} track{'' if unassigned == 1 else 's'} without a character</div>" if unassigned else ""
    return f"<section class=cast>{''.join(figures)}{note}</section>"


def _page(episode_dir: Path, summaries: list[ShotSummary], sections: list[str], flagged: int, cast: str = "") -> str:
    failed = sum(s.status != "ok" for s in summaries)
    complete = "complete" if (episode_dir / SUCCESS_NAME).exists() else f"<b>not complete</b> (no {SUCCESS_NAME})"
    facts = (
        f"{len(summaries)} shots, {sum(s.frames for s in summaries)} frames, {sum(s.rows for s in summaries)} masks, "
        f"{sum(s.tracks for s in summaries)} tracks; {failed} failed, {flagged} flagged; {complete}. "
        "Contact sheets: keyframes outlined yellow, then frames sampled across the shot."
    )
    name = html.escape(episode_dir.name)
    return (
        f'<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content="width=device-width">'
        f"<title>celmask QC: {name}</title><style>{STYLE}</style><body><header><h1>celmask QC: {name}</h1>"
        f"<div>{facts}</div><label><input type=checkbox id=flagged-only> only shots with flags</label></header>\n"
        + cast
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


def write_report(episode_dir: str | Path, video: str | Path | None = None) -> Path:
    """Write the QC report of one episode directory (replacing an earlier one when
    complete) and return the path of its ``index.html``."""
    episode_dir = Path(episode_dir)
    if episode_dirs(episode_dir) != [episode_dir]:
        raise CelmaskError(
            episode_dir, "is an output tree and a report is per episode", "pass one episode directory OUT/<episode_id>"
        )
    summaries = read_episode_table(episode_dir)
    metas = shot_metas(episode_dir)
    size = still_size(
        metas[0].source_size if metas else (STILL_HEIGHT, STILL_HEIGHT)
    )  # no shot files: no contact sheets
    frames = VideoFrames(video, metas, size, deblock=False) if video is not None and metas else None
    report = report_dir(episode_dir)
    shots = iter_shots(episode_dir)
    shot = next(shots, None)
    sections: list[str] = []
    flagged = 0
    try:
        with staged_dir(report) as tmp:
            (tmp / THUMBS_DIR).mkdir()
            for summary in summaries:
                index = summary.shot.index
                while shot is not None and shot.meta.shot.index < index:
                    shot = next(shots, None)
                this = shot if shot is not None and shot.meta.shot.index == index else None
                flags = shot_flags(summary, this) + correction_flags(episode_dir, this)
                flagged += bool(flags)
                thumb = None
                name = f"{THUMBS_DIR}/shot_{index:04d}.jpg"
                made = sheet_path(episode_dir, index)
                if this is not None and made.exists():  # made by the shot's run from its own frames
                    shutil.copyfile(made, tmp / name)
                    with Image.open(made) as image:
                        thumb = (name, *image.size)
                elif this is not None or frames is not None:
                    sheet = contact_sheet(summary, this, frames, size)
                    (tmp / name).write_bytes(jpeg(sheet))
                    thumb = (name, sheet.shape[1], sheet.shape[0])
                preview = exports_dir(episode_dir, "preview") / f"shot_{index:04d}.mp4"
                href = os.path.relpath(preview, report) if preview.exists() else None
                sections.append(_shot_html(summary, flags, thumb, href))
            (tmp / INDEX_NAME).write_text(
                _page(episode_dir, summaries, sections, flagged, cast_strip(episode_dir, tmp))
            )
    finally:
        if frames is not None:
            frames.close()
    return report / INDEX_NAME
