"""Masks drawn over the video: the preview video per shot, and the overlays of the QC
report's contact sheets.

:func:`draw_overlay` fills each instance in its track's colour, outlines it, and
tags it with its track id; a track's keyframe (the frame its masks were propagated
from) gets a thick outline and a "KEY" tag. A track keeps its colour in every
frame, preview and contact sheet. :func:`write_previews` encodes one H.264 file per
shot, ``shot_<NNNN>.mp4``, one frame per frame of the shot, at most
:data:`PREVIEW_WIDTH` wide, decoding the source video once for the whole episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from celmask.tasks.manifest.read import Row, ShotRows, VideoFrames, iter_shots, shot_metas
from celmask.tasks.video import probe
from celmask.tasks.video.encoding import FfmpegWriter

TRACK_COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
)
"""RGB colour of track ``t``: ``TRACK_COLOURS[t % 10]`` (Trubetskoy's distinct colours
without the yellows, which mark keyframes)."""
KEY_COLOUR = (255, 255, 0)
FILL_ALPHA = 0.45
PREVIEW_WIDTH = 640
"""Previews are for looking, not measuring: at most this wide, which keeps a
300-shot episode's previews to a few hundred MB."""
PREVIEW_CRF = 26


def track_colour(track_id: int) -> tuple[int, int, int]:
    return TRACK_COLOURS[track_id % len(TRACK_COLOURS)]


def preview_size(source_size: tuple[int, int], width: int = PREVIEW_WIDTH) -> tuple[int, int]:
    """(width, height) of previews of ``source_size`` (height, width) frames: at most
    ``width`` wide, aspect kept, both even (yuv420p needs it)."""
    h, w = source_size
    out_w = min(width, w) // 2 * 2
    return out_w, max(2, round(h * out_w / w / 2) * 2)


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float) -> None:
    """``text`` on a filled box of ``colour`` with its top-left corner near (x, y), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    h, w = image.shape[:2]
    x = min(max(0, x), max(0, w - tw - 2))
    y = min(max(0, y), max(0, h - th - base - 2))
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 2), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def scaled_box(bbox: Sequence[int], source: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of ``bbox`` (x, y, w, h in a ``source`` (height, width) frame) in an
    image of ``size``: at least a pixel, never past the image's edge (a box touching the
    frame's edge once overshot it by a pixel through float rounding)."""
    x, y, bw, bh = bbox
    (sh, sw), (h, w) = source, size
    x0, y0 = min(w - 1, x * w // sw), min(h - 1, y * h // sh)
    x1, y1 = min(w, max(x0 + 1, -(-(x + bw) * w // sw))), min(h, max(y0 + 1, -(-(y + bh) * h // sh)))
    return x0, y0, x1, y1


def draw_overlay(image: np.ndarray, shot: ShotRows, rows: Sequence[Row], caption: str = "") -> np.ndarray:
    """A copy of ``image`` (h, w, 3 RGB, any size) with the masks of ``rows`` drawn on
    it, scaled from the video's size, and ``caption`` in the top-left corner."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.3, h / 900)
    for row in rows:
        x, y, bw, bh = row.bbox
        if bw == 0:
            continue
        x0, y0, x1, y1 = scaled_box(row.bbox, shot.size, (h, w))
        crop = np.ascontiguousarray(shot.mask(row.rle)[y : y + bh, x : x + bw]).view(np.uint8)
        small = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        colour = np.array(track_colour(row.track_id), np.float32)
        region = out[y0:y1, x0:x1]
        inside = small.astype(bool)
        region[inside] = (region[inside] * (1 - FILL_ALPHA) + colour * FILL_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outline = KEY_COLOUR if row.is_keyframe else tuple(int(c) for c in colour)
        cv2.drawContours(region, contours, -1, outline, 2 if row.is_keyframe else 1, cv2.LINE_AA)
        _label(
            out,
            f"{row.track_id} KEY" if row.is_keyframe else str(row.track_id),
            x0,
            y0,
            KEY_COLOUR if row.is_keyframe else track_colour(row.track_id),
            scale,
        )
    if caption:
        _label(out, caption, 0, 0, (0, 0, 0), scale)
    return out


def write_previews(episode_dir: Path, dest: Path, video: str | Path) -> int:
    """Write ``dest/shot_<NNNN>.mp4`` for every shot file of ``episode_dir``; the number written."""
    metas = shot_metas(episode_dir)
    if not metas:
        return 0
    frames = VideoFrames(video, metas, preview_size(metas[0].source_size))
    fps = Fraction(probe(video).frame_rate)
    count = 0
    try:
        for shot in iter_shots(episode_dir):
            index = shot.meta.shot.index
            with FfmpegWriter(dest / f"shot_{index:04d}.mp4", *frames.size, fps, crf=PREVIEW_CRF) as encoder:
                for frame, rows in shot.frames():
                    keys = [r.track_id for r in rows if r.is_keyframe]
                    caption = f"shot {index} frame {frame}" + (f" key {','.join(map(str, keys))}" if keys else "")
                    encoder.write(draw_overlay(frames.get(frame), shot, rows, caption))
            count += 1
    finally:
        frames.close()
    return count
