"""Render an episode plan into frames, encode it, and write its ground truth.

Per shot, each *drawing* (background set + characters in their poses) is composed
once, on the part of the set the shot's camera ever sees, with a label map saying
which character owns each pixel
(pasting back to front makes occlusion exact). Per frame, the camera is one
``cv2.warpAffine`` of that composite (bilinear) and of its label map (nearest), then
transitions, flashes and subtitles are applied. When neither the drawing nor the
camera changes, the previous frame's arrays are returned as they are, which is what
makes held frames exactly identical and cheap.

Where the pictures come from is an :class:`EpisodeArt`: the generated sets and
character designs of the plan (:class:`GeneratedArt`, the default), or real cut-outs
and backgrounds (:mod:`celmask.tasks.synth.realepisode`); :func:`write_episode` renders any
plan with any art into the same files.

    truth = generate_episode("/tmp/ep", seed=7, duration=20.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.rle import encode_mask_fortran
from celmask.tasks.synth.backgrounds import camera_matrix, paint_set
from celmask.tasks.synth.edits import cover
from celmask.tasks.synth.sprites import Sprite, draw_character, paste_sprite
from celmask.tasks.synth.staging import CharacterPlan
from celmask.tasks.synth.timeline import EpisodePlan, ShotPlan, layers_at, plan_timeline
from celmask.tasks.synth.truth import (
    MASKS_NAME,
    MIN_VISIBLE_PIXELS,
    TRUTH_NAME,
    VIDEO_NAME,
    EpisodeTruthFlash,
    EpisodeTruthShot,
    EpisodeTruthTrack,
    MaskWriter,
    Truth,
)
from celmask.tasks.video.encoding import FfmpegWriter

WHITEN_KEEP = 0.22
"""A "whiten" flash keeps this fraction of the picture and fills the rest with white."""
MAX_CACHED_SETS = 4
"""Painted sets kept in memory for shots that come back to the same place."""


@dataclass(frozen=True)
class RenderedFrame:
    """One finished frame.

    rgb: (H, W, 3) uint8, may be the very array of the previous frame when nothing
    changed: never modify it. labels: (H, W) uint8 in frame pixels, 0 = no character,
    ``k + 1`` = character slot ``k`` of shot ``shot`` (``plan.shots[shot].characters[k]``);
    None where no character is visible by rule (full white/black frames, black fade
    frames, and transition frames that show only the other shot). same_as_previous:
    rgb is identical to the previous frame's (a held frame).
    """

    index: int
    shot: int
    rgb: np.ndarray
    labels: np.ndarray | None
    same_as_previous: bool


class EpisodeArt(Protocol):
    """The pictures a plan is drawn with: a set per ``set_id`` and a character's sprite per pose."""

    def background(self, set_id: int) -> np.ndarray:
        """The whole set, (h, w, 3) uint8 RGB; the camera's set pixels."""
        ...

    def sprite(self, character: CharacterPlan, pose: int) -> Sprite:
        """``character`` in its pose number ``pose``, at its size in the shot."""
        ...


@dataclass(frozen=True)
class GeneratedArt:
    """The plan's own painted sets and drawn character designs."""

    plan: EpisodePlan

    def background(self, set_id: int) -> np.ndarray:
        return paint_set(self.plan.sets[set_id])

    def sprite(self, character: CharacterPlan, pose: int) -> Sprite:
        ch = character
        return draw_character(
            self.plan.cast[ch.character_id], ch.poses[pose], ch.px_per_unit, crop_bottom=ch.crop_bottom
        )


class _ShotPainter:
    """Draws one shot's own picture for any frame of its content range."""

    def __init__(
        self,
        plan: EpisodePlan,
        shot: ShotPlan,
        background: np.ndarray,
        art: EpisodeArt,
        backdrop: np.ndarray | None = None,
    ) -> None:
        """``backdrop``: the set of the shot's background switch (``shot.switch``), if it has one."""
        self.plan = plan
        self.shot = shot
        self.art = art
        self.size = (plan.width, plan.height)
        # Work on the part of the set this shot's camera ever shows (plus 2 px for the
        # bilinear footprint): smaller copies per drawing, same pixels.
        w, h = self.size
        sh, sw = background.shape[:2]
        x0 = max(0, math.floor(min(c.cx - w / (2 * c.zoom) for c in shot.camera)) - 2)
        y0 = max(0, math.floor(min(c.cy - h / (2 * c.zoom) for c in shot.camera)) - 2)
        x1 = min(sw, math.ceil(max(c.cx + w / (2 * c.zoom) for c in shot.camera)) + 2)
        y1 = min(sh, math.ceil(max(c.cy + h / (2 * c.zoom) for c in shot.camera)) + 2)
        self.offset = (x0, y0)
        background = background[y0:y1, x0:x1]
        self.background = background
        self.backdrop = None if backdrop is None else backdrop[y0:y1, x0:x1]
        self._sprites: dict[tuple[int, int], Sprite] = {}
        self._drawing = -1
        self._comp = background
        self._comp_labels = np.zeros(background.shape[:2], np.uint8)
        self._key: tuple | None = None
        self._out: tuple[np.ndarray, np.ndarray] | None = None

    def _sprite(self, slot: int, pose: int) -> Sprite:
        key = (slot, pose)
        if key not in self._sprites:
            self._sprites[key] = self.art.sprite(self.shot.characters[slot], pose)
        return self._sprites[key]

    def _compose(self, d: int) -> None:
        switch = self.shot.switch
        background = self.backdrop if switch is not None and d >= switch.drawing else self.background
        if not self.shot.characters:
            self._comp = background  # the bare background and an empty label map
            return
        comp = background.copy()
        labels = np.zeros(comp.shape[:2], np.uint8)
        ox, oy = self.offset
        for slot, ch in enumerate(self.shot.characters):
            ax, ay = ch.anchor_of_drawing[d]
            paste_sprite(comp, labels, self._sprite(slot, ch.pose_of_drawing[d]), (ax - ox, ay - oy), slot + 1)
        self._comp, self._comp_labels = comp, labels

    def picture(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, labels (H, W) uint8) of the shot at episode ``frame``."""
        d = self.shot.drawing_at(frame)
        cam = self.shot.camera[frame - self.shot.content_start]
        key = (d, cam)
        if key == self._key and self._out is not None:
            return self._out
        if d != self._drawing:
            self._compose(d)
            self._drawing = d
        m = camera_matrix((cam.cx - self.offset[0], cam.cy - self.offset[1]), cam.zoom, (0.0, 0.0), self.size)
        x0, y0 = -m[0, 2], -m[1, 2]
        w, h = self.size
        ch, cw = self._comp.shape[:2]
        if cam.zoom == 1.0 and x0.is_integer() and y0.is_integer() and 0 <= x0 <= cw - w and 0 <= y0 <= ch - h:
            # Whole-pixel view at scale 1: the warp is a crop (20x cheaper, same pixels).
            xi, yi = int(x0), int(y0)
            rgb = self._comp[yi : yi + h, xi : xi + w].copy()
            labels = self._comp_labels[yi : yi + h, xi : xi + w].copy()
        else:
            rgb = cv2.warpAffine(self._comp, m, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            labels = cv2.warpAffine(
                self._comp_labels, m, self.size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        self._key, self._out = key, (rgb, labels)
        return self._out


def background_plate(plan: EpisodePlan, shot_index: int, frame: int, art: EpisodeArt | None = None) -> np.ndarray:
    """The shot's picture at episode ``frame`` without its characters: (H, W, 3) uint8.

    Same set, same camera; before transitions, flashes and subtitles. Useful as a clean
    plate for compositing and to check that masks cover exactly the character pixels.
    """
    shot = plan.shots[shot_index]
    if not shot.content_start <= frame < shot.content_end:
        raise ValueError(
            f"frame {frame} is outside shot {shot_index}'s content [{shot.content_start}, {shot.content_end})"
        )
    art = GeneratedArt(plan) if art is None else art
    backdrop = art.background(shot.switch.set_id) if shot.switch is not None else None
    painter = _ShotPainter(plan, replace(shot, characters=()), art.background(shot.set_id), art, backdrop)
    return painter.picture(frame)[0]


def _draw_subtitle(rgb: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``rgb`` with ``text`` burnt in: white with a black outline, bottom centre."""
    out = rgb.copy()
    h, w = out.shape[:2]
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = 0.66 * h / 360.0
    thick = max(1, int(round(1.5 * h / 360.0)))
    (tw, _), _ = cv2.getTextSize(text, font, scale, thick)
    if tw > 0.92 * w:
        scale *= 0.92 * w / tw
        (tw, _), _ = cv2.getTextSize(text, font, scale, thick)
    x, y = (w - tw) // 2, h - int(round(0.07 * h))
    r = max(1, int(round(1.6 * h / 360.0)))
    # The outline is the text stamped around the glyphs (a thicker stroke would also
    # widen the glyph advance and drift out of register with the white text).
    for dx, dy in ((-r, 0), (r, 0), (0, -r), (0, r), (-r, -r), (r, r), (-r, r), (r, -r)):
        cv2.putText(out, text, (x + dx, y + dy), font, scale, (0, 0, 0), thick + 1, cv2.LINE_AA)
    cv2.putText(out, text, (x, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def _sets_of(shot: ShotPlan) -> list[int]:
    """The sets a shot shows: its own and its background switch's."""
    return [shot.set_id] + ([shot.switch.set_id] if shot.switch is not None else [])


def render_frames(plan: EpisodePlan, art: EpisodeArt | None = None) -> Iterator[RenderedFrame]:
    """Every frame of the episode, in order, with the label map its masks come from
    (pictures from ``art``, default the plan's generated ones)."""
    art = GeneratedArt(plan) if art is None else art
    h, w = plan.height, plan.width
    black = np.zeros((h, w, 3), np.uint8)
    white = np.full((h, w, 3), 255, np.uint8)
    flashes = {f.frame: f.kind for s in plan.shots for f in s.flashes}
    subtitles = {s.index: s.subtitles for s in plan.shots}
    backgrounds: dict[int, np.ndarray] = {}
    painters: dict[int, _ShotPainter] = {}
    prev: np.ndarray | None = None
    sub_cache: tuple[np.ndarray, str, np.ndarray] | None = None  # (frame without text, text, frame with text)
    for f in range(plan.frame_count):
        owner = plan.shot_at(f)
        layers = layers_at(plan, f)
        for j in list(painters):
            if plan.shots[j].content_end <= f:
                del painters[j]
        pictures = {}
        for j, _ in layers:
            if j not in painters:
                shot = plan.shots[j]
                for set_id in _sets_of(shot):
                    if set_id not in backgrounds:
                        backgrounds[set_id] = art.background(set_id)
                backdrop = backgrounds[shot.switch.set_id] if shot.switch is not None else None
                painters[j] = _ShotPainter(plan, shot, backgrounds[shot.set_id], art, backdrop)
            pictures[j] = painters[j].picture(f)
            occlusion = plan.shots[j].occlusion
            if occlusion is not None and occlusion.start <= f < occlusion.end:
                pictures[j] = cover(*pictures[j], occlusion, f)
        if len(backgrounds) > MAX_CACHED_SETS:  # forget the oldest sets no shot on screen uses
            in_use = {i for j in painters for i in _sets_of(plan.shots[j])}
            for sid in [s for s in backgrounds if s not in in_use][: len(backgrounds) - MAX_CACHED_SETS]:
                del backgrounds[sid]

        kind = flashes.get(f)
        labels = pictures[owner][1] if owner in pictures else None
        if kind == "white":
            rgb, labels = white, None
        elif kind == "black":
            rgb, labels = black, None
        else:
            if not layers:
                rgb = black
            elif len(layers) == 1:
                j, wt = layers[0]
                rgb = pictures[j][0] if wt >= 1.0 else cv2.convertScaleAbs(pictures[j][0], alpha=wt)
            else:
                (ja, wa), (jb, wb) = layers
                rgb = cv2.addWeighted(pictures[ja][0], wa, pictures[jb][0], wb, 0.0)
            if kind == "whiten":
                rgb = cv2.convertScaleAbs(rgb, alpha=WHITEN_KEEP, beta=255.0 * (1.0 - WHITEN_KEEP))
            text = next((s.text for s in subtitles[owner] if s.start <= f < s.end), None)
            if text is not None:
                if sub_cache is not None and sub_cache[0] is rgb and sub_cache[1] == text:
                    rgb = sub_cache[2]
                else:
                    base = rgb
                    rgb = _draw_subtitle(base, text)
                    sub_cache = (base, text, rgb)
        same = prev is not None and (rgb is prev or _identical(rgb, prev))
        yield RenderedFrame(index=f, shot=owner, rgb=rgb, labels=labels, same_as_previous=same)
        prev = rgb


def generate_episode(
    out_dir: str | Path,
    *,
    seed: int,
    duration: float = 60.0,
    width: int = 640,
    height: int = 360,
    fps: Fraction = Fraction(24000, 1001),
    hard_cases: bool = False,
) -> Truth:
    """Render a synthetic episode with ground truth into ``out_dir`` (``hard_cases``: with
    the editing that fools shot detectors, :mod:`celmask.tasks.synth.edits`).

    The episode has ``round(duration * fps)`` frames. Writes ``episode.mp4`` (H.264,
    yuv420p, crf 18, a keyframe at least every 2 s), ``masks.parquet`` and, last,
    ``truth.json``; each goes through a temporary name and a rename, and an existing
    ``truth.json`` is removed first, so ``truth.json`` exists only for a complete
    episode. Same arguments give the same frames, truth and mask bytes (and the same
    mp4 bytes with the same ffmpeg build).
    """
    fps = Fraction(fps)
    frame_count = episode_frames(duration, fps)
    plan = plan_timeline(seed, frame_count=frame_count, width=width, height=height, fps=fps, hard_cases=hard_cases)
    return write_episode(out_dir, plan)


def episode_frames(duration: float, fps: Fraction) -> int:
    """``round(duration * fps)``, checked to be at least one frame."""
    if duration <= 0 or fps <= 0:
        raise ValueError(f"duration and fps must be > 0, got duration={duration}, fps={fps}")
    frame_count = int(round(Fraction(duration) * fps))
    if frame_count < 1:
        raise ValueError(f"duration={duration} s at {fps} fps gives no frames")
    return frame_count


def write_episode(
    out_dir: str | Path, plan: EpisodePlan, art: EpisodeArt | None = None, extra: dict[str, bytes] | None = None
) -> Truth:
    """Render ``plan`` with ``art`` (default: its generated sets and characters) into
    ``out_dir`` as :func:`generate_episode` describes; ``extra`` files (name -> bytes)
    are written just before ``truth.json``, so they too exist only for a complete episode."""
    width, height, fps, frame_count = plan.width, plan.height, plan.fps, plan.frame_count
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth_path = out / TRUTH_NAME
    if truth_path.exists():
        truth_path.unlink()
    tmp_video = out / f".{VIDEO_NAME}.partial"
    tmp_masks = out / f".{MASKS_NAME}.partial"

    tracks: dict[int, dict[int, list[int]]] = {}  # shot -> slot -> [track_id, first, last, count]
    holds: list[tuple[int, int]] = []
    run_start: int | None = None
    cached_rows: tuple[int, np.ndarray, list] | None = None  # (shot, labels array, rows)
    masks = MaskWriter(tmp_masks)
    try:
        with FfmpegWriter(tmp_video, width, height, fps) as enc:
            for fr in render_frames(plan, art):
                enc.write(fr.rgb)
                if fr.same_as_previous:
                    run_start = fr.index - 1 if run_start is None else run_start
                elif run_start is not None:
                    holds.append((run_start, fr.index))
                    run_start = None
                if fr.labels is None:
                    continue
                if cached_rows is not None and cached_rows[0] == fr.shot and cached_rows[1] is fr.labels:
                    rows = cached_rows[2]
                else:
                    rows = _instances(fr.labels, len(plan.shots[fr.shot].characters))
                    cached_rows = (fr.shot, fr.labels, rows)
                shot_tracks = tracks.setdefault(fr.shot, {})
                out_rows = []
                for slot, area, bbox, rle in rows:
                    t = shot_tracks.get(slot)
                    if t is None:
                        t = shot_tracks[slot] = [len(shot_tracks), fr.index, fr.index, 0]
                    t[2] = fr.index
                    t[3] += 1
                    out_rows.append((t[0], slot, area, bbox, rle))
                for track, slot, area, bbox, rle in sorted(out_rows):
                    cid = plan.shots[fr.shot].characters[slot].character_id
                    masks.add(fr.index, fr.shot, track, cid, height, width, area, bbox, rle)
        if run_start is not None:
            holds.append((run_start, frame_count))
        masks.close()
    except BaseException:
        masks.close()
        for p in (tmp_video, tmp_masks):
            if p.exists():
                p.unlink()
        raise

    truth = _truth(plan, tracks, holds)
    os.replace(tmp_masks, out / MASKS_NAME)
    os.replace(tmp_video, out / VIDEO_NAME)
    for name, data in (extra or {}).items():
        write_atomic(out / name, data)
    write_atomic(truth_path, truth.to_json().encode("utf-8"))
    return truth


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality, rejecting most different frames on a sparse sample first."""
    return bool(np.array_equal(a[::7, ::7], b[::7, ::7])) and bool(np.array_equal(a, b))


def _instances(labels: np.ndarray, n_slots: int) -> list[tuple[int, int, tuple[int, int, int, int], str]]:
    """(slot, area, bbox, rle) for every character slot visible in a label map."""
    out: list[tuple[int, int, tuple[int, int, int, int], str]] = []
    if n_slots == 0 or not labels.any():
        return out
    # COCO RLE is column-major: work on the transpose so each mask is Fortran-ordered for free.
    lt = np.ascontiguousarray(labels.T)
    for slot in range(n_slots):
        m = (lt == slot + 1).view(np.uint8)
        area = int(np.count_nonzero(m))
        if area < MIN_VISIBLE_PIXELS:
            continue
        rle, bbox = encode_mask_fortran(m.T)
        out.append((slot, area, bbox, rle))
    return out


def _truth(plan: EpisodePlan, tracks: dict[int, dict[int, list[int]]], holds: list[tuple[int, int]]) -> Truth:
    shots = []
    for s in plan.shots:
        st = tracks.get(s.index, {})
        track_list = tuple(
            EpisodeTruthTrack(
                track_id=t[0],
                character_id=s.characters[slot].character_id,
                first_frame=t[1],
                last_frame=t[2],
                n_frames=t[3],
            )
            for slot, t in sorted(st.items(), key=lambda kv: kv[1][0])
        )
        shots.append(
            EpisodeTruthShot(
                index=s.index,
                start=s.start,
                end=s.end,
                transition=s.transition.kind,
                transition_start=s.transition.span[0] if s.transition.kind in ("fade", "dissolve") else s.start,
                transition_end=s.transition.span[1] if s.transition.kind in ("fade", "dissolve") else s.start,
                subtitles=bool(s.subtitles),
                n_characters=len(track_list),
                closeup=s.kind == "closeup",
                kind=s.kind,
                timing=s.timing,
                camera=s.camera_move,
                camera_on_ones=s.camera_on_ones,
                set_id=s.set_id,
                n_drawings=len(s.drawings),
                subtitle_spans=tuple((x.start, x.end) for x in s.subtitles),
                edit=s.edit,
                tracks=track_list,
            )
        )
    flashes = tuple(EpisodeTruthFlash(f.frame, f.kind) for s in plan.shots for f in s.flashes)
    return Truth(
        seed=plan.seed,
        width=plan.width,
        height=plan.height,
        fps=plan.fps,
        frame_count=plan.frame_count,
        shots=tuple(shots),
        flashes=flashes,
        holds=tuple(holds),
        hard_cases=plan.hard_cases,
        occlusions=tuple((s.occlusion.start, s.occlusion.end) for s in plan.shots if s.occlusion is not None),
        switches=tuple(s.content_start + s.drawings[s.switch.drawing] for s in plan.shots if s.switch is not None),
    )
