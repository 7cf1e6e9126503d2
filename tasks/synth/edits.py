"""Editing that fools shot detectors: the hard cases of the shot benchmark.

Planned only when asked for (``plan_timeline(..., hard_cases=True)``), from random
streams of their own, so that the default episodes of every seed stay as they were:

- **cut-ins and cut-outs** (cuts): the next shot shows the same set, characters and
  layout, zoomed in x1.25-1.6, or back out to the framing before the cut-in; most
  lines and every colour carry over the cut;
- **jump cuts** (cuts): the same set and cast from a camera moved sideways, the
  characters jumped to new places and poses;
- **returns** (cuts): after a short insert (at most :data:`INSERT_FRAMES`), back to the
  shot before it, framing and characters as they were: the picture before the first
  cut comes back, as it does after an occlusion;
- **occlusions** (no cut): something close to the camera (a wing, a passing body)
  wipes across, covers the whole frame for 5-20 frames and uncovers the same shot;
- **background switches** (no cut): behind a close-up that holds still, the set gives
  way to an abstract backdrop (speed lines, stripes, bokeh) as the expression changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from celmask.tasks.synth.backgrounds import SetDesign, view_rect
from celmask.tasks.synth.characters import random_expression
from celmask.tasks.synth.palette import RGB, darken, hsv, shade
from celmask.tasks.synth.staging import CameraState, CharacterPlan, clamp_center, plan_drawings

EDIT_KINDS = ("cut-in", "cut-out", "jump", "return")
EDIT_CHANCE = 0.35
"""Chance that a shot continuing a scene with characters is a cut-in or a jump of the shot before."""
CUT_OUT_CHANCE = 0.6
"""Chance that the shot after a cut-in goes back out to the framing before it."""
INSERT_FRAMES = 40
RETURN_CHANCE = 0.6
"""Chance that the shot after an insert of at most INSERT_FRAMES goes back to the shot before the insert."""
OCCLUSION_CHANCE = 0.3
SWITCH_CHANCE = 0.6
"""Chance of a background switch in a close-up long enough for one."""
MARGIN = 8
"""Occlusions and switches keep this many frames from boundaries, transitions and flashes."""
BACKDROPS = 2
"""Abstract backdrops an episode's close-ups may switch to."""


@dataclass(frozen=True)
class Occlusion:
    """A foreground object crossing the frame: a band with curved edges, outlined,
    with inner lines, moving ``speed`` frame pixels per frame."""

    start: int
    """First frame it shows in."""
    end: int
    """First frame after it has left."""
    covered: tuple[int, int]
    """Half-open frames it covers the whole frame."""
    direction: int
    """+1: enters at the left, moves right; -1: the other way."""
    speed: float
    length: float
    """Extent along the motion, frame pixels."""
    bulge: float
    """How far the middle of each edge leads its ends, frame pixels."""
    fill: RGB
    shadow: RGB
    line: RGB
    stripes: tuple[float, ...]
    """Inner lines, as fractions of ``length`` from the leading edge."""
    on_twos: bool

    def lead(self, frame: int) -> float:
        """Leading edge's position along the motion at ``frame`` (its ends; the middle leads by ``bulge``)."""
        t = frame - self.start
        if self.on_twos:
            t -= t % 2
        return (t + 1) * self.speed - self.bulge


@dataclass(frozen=True)
class BackgroundSwitch:
    drawing: int
    """The shot's first drawing on the backdrop."""
    set_id: int
    """The backdrop's set."""


def choose_edits(rng: np.random.Generator, specs: list) -> list[str]:
    """Per shot plan (``timeline._Spec``): "cut-in", "cut-out", "jump" or "return" where it
    goes on from an earlier shot of the same scene (the one before; for "cut-out" and
    "return", the one before that), else "". Such a shot takes that shot's set, kind and
    cast and starts with a hard cut."""
    edits = [""]
    for k in range(1, len(specs)):
        prev, spec, edit = specs[k - 1], specs[k], ""
        before = specs[k - 2] if k >= 2 else None
        if (
            before is not None
            and before.scene == prev.scene == spec.scene
            and before.cast
            and before.kind != "empty"
            and edits[-1] not in ("cut-in", "return")
            and prev.end - prev.start <= INSERT_FRAMES
            and rng.random() < RETURN_CHANCE
        ):
            edit = "return"
        elif spec.scene == prev.scene and prev.cast and prev.kind != "empty":
            if edits[-1] == "cut-in":
                edit = "cut-out" if rng.random() < CUT_OUT_CHANCE else ""
            elif rng.random() < EDIT_CHANCE:
                edit = "cut-in" if prev.kind != "closeup" and rng.random() < 0.55 else "jump"
        edits.append(edit)
    return edits


def derive_shot(
    rng: np.random.Generator,
    edit: str,
    prev,
    framing,
    n: int,
    fps,
    set_design: SetDesign,
    width: int,
    height: int,
) -> dict:
    """The staging of a shot that continues ``prev`` (a ``ShotPlan``: its characters) as
    ``edit``: ShotPlan fields (timing, camera, drawings, characters, ...). ``framing`` is the
    shot whose last framing it starts from (for a cut-out, the one before the cut-in)."""
    timing = ("2s", "3s", "mixed")[int(rng.integers(3))]
    drawings, still_spans = plan_drawings(rng, n, timing, fps)
    base = framing.camera[-1]
    cx, cy, zoom = base.cx, base.cy, base.zoom
    shift = [0.0] * len(prev.characters)
    if edit == "cut-in":
        zoom = base.zoom * float(rng.uniform(1.25, 1.6))
        if prev.characters:  # toward one of the characters, and up toward the faces
            target = prev.characters[int(rng.integers(len(prev.characters)))].anchor_of_drawing[-1][0]
            cx += float(rng.uniform(0.3, 0.7)) * (target - cx)
        cy -= float(rng.uniform(0.0, 0.12)) * height / base.zoom
    elif edit == "jump":
        zoom = base.zoom * float(rng.uniform(1.0, 1.12))
        cx += float(rng.uniform(0.12, 0.3)) * width / base.zoom * (1 if rng.random() < 0.5 else -1)
        shift = [
            float(rng.uniform(0.06, 0.2)) * width / zoom * (1 if rng.random() < 0.5 else -1) for _ in prev.characters
        ]
    elif edit not in ("cut-out", "return"):
        raise ValueError(f"edit must be one of {EDIT_KINDS}, got {edit!r}")
    c = clamp_center((cx, cy), zoom, set_design, width, height)
    camera = (CameraState(c[0], c[1], round(zoom, 6)),) * n
    vx0, _, vx1, _ = view_rect(c, zoom, (width, height))
    characters = []
    for ch, dx in zip(prev.characters, shift):
        used = sorted(set(ch.pose_of_drawing))
        cur = ch.pose_of_drawing[-1] if edit != "jump" else used[int(rng.integers(len(used)))]
        poses = []
        for _ in drawings:
            if rng.random() < 0.3:
                cur = used[int(rng.integers(len(used)))]
            poses.append(cur)
        ax, ay = ch.anchor_of_drawing[-1]
        if dx:  # jumped, to somewhere the new framing shows
            ax = min(max(ax + dx, vx0 + 0.1 * (vx1 - vx0)), vx1 - 0.1 * (vx1 - vx0))
        characters.append(
            replace(
                ch,
                pose_of_drawing=tuple(poses),
                anchor_of_drawing=((round(ax, 3), ay),) * len(drawings),
                motion="stand",
            )
        )
    return {
        "timing": timing,
        "camera_move": "static",
        "camera_on_ones": False,
        "drawings": drawings,
        "still_spans": still_spans,
        "camera": camera,
        "characters": tuple(characters),
        "subtitles": (),
        "flashes": (),
    }


def plan_occlusion(rng: np.random.Generator, calm: tuple[int, int], busy: list[int], width: int) -> Occlusion | None:
    """An occlusion inside the shot's calm frames ``calm`` away from the ``busy`` frames (flashes), or None."""
    if rng.random() >= OCCLUSION_CHANCE:
        return None
    enter, full = int(rng.integers(3, 10)), int(rng.integers(5, 21))
    on_twos = rng.random() < 0.5
    bulge = float(rng.uniform(0.05, 0.25)) * width
    speed = (width + bulge) / enter
    length = width + bulge + (full + 0.5) * speed
    hue = float(rng.random())
    fill = hsv(hue, float(rng.uniform(0.2, 0.7)), float(rng.uniform(0.25, 0.8)))
    occ = Occlusion(
        0,
        0,
        (0, 0),
        1 if rng.random() < 0.5 else -1,
        round(speed, 3),
        round(length, 3),
        round(bulge, 3),
        fill,
        shade(fill, 0.35),
        darken(fill, 0.8),
        tuple(sorted(round(float(s), 3) for s in rng.uniform(0.05, 0.95, int(rng.integers(4, 12))))),
        on_twos,
    )
    frames, covered = 0, []
    while occ.lead(frames) - occ.length < width:  # until the trailing edge's ends are past the frame
        lead = occ.lead(frames)
        if lead >= width and lead - occ.length + occ.bulge <= 0:
            covered.append(frames)
        frames += 1
    lo, hi = calm[0] + MARGIN, calm[1] - MARGIN - frames
    starts = [s for s in range(lo, hi + 1) if not any(s - MARGIN <= b < s + frames + MARGIN for b in busy)]
    if not starts or not covered:
        return None
    s = starts[int(rng.integers(len(starts)))]
    return replace(occ, start=s, end=s + frames, covered=(s + covered[0], s + covered[-1] + 1))


def cover(
    rgb: np.ndarray, labels: np.ndarray | None, occ: Occlusion, frame: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """``rgb`` and ``labels`` with the occluder painted over at ``frame`` (new arrays; no character shows under it)."""
    h, w = rgb.shape[:2]
    x = np.arange(w, dtype=np.float32)
    if occ.direction < 0:
        x = w - 1 - x
    offset = occ.bulge * np.sin(np.pi * (np.arange(h, dtype=np.float32) + 0.5) / h)
    depth = (occ.lead(frame) + offset)[:, None] - x[None, :]  # distance behind the leading edge
    inside = (depth >= 0) & (depth < occ.length)
    if not inside.any():
        return rgb, labels
    out = rgb.copy()
    lw = max(2.0, w / 200)
    out[inside] = occ.fill
    out[inside & (depth > 0.7 * occ.length)] = occ.shadow
    lines = (depth < lw) | (depth > occ.length - lw)
    for s in occ.stripes:
        lines |= np.abs(depth - s * occ.length) < lw / 2
    out[inside & lines] = occ.line
    if labels is not None:
        labels = labels.copy()
        labels[inside] = 0
    return out, labels


def plan_switch(
    rng: np.random.Generator, shot, backdrops: list[int], calm: tuple[int, int]
) -> tuple[BackgroundSwitch, tuple[CharacterPlan, ...]] | None:
    """A background switch for close-up ``shot`` (a ``ShotPlan``) at a drawing inside its calm
    frames, and its characters with a new expression from there; or None."""
    if shot.kind != "closeup" or not shot.characters or rng.random() >= SWITCH_CHANCE:
        return None
    if shot.camera_move != "static" or any(ch.motion != "stand" for ch in shot.characters):
        return None  # the close-up holds still while the set behind it changes
    flashes = [f.frame for f in shot.flashes]
    choices = [
        d
        for d, s in enumerate(shot.drawings)
        if d > 0
        and calm[0] + MARGIN <= shot.content_start + s < calm[1] - MARGIN
        and not any(abs(shot.content_start + s - f) < MARGIN for f in flashes)
    ]
    others = [b for b in backdrops if b != shot.set_id]
    if not choices or not others:
        return None
    d = choices[int(rng.integers(len(choices)))]
    switch = BackgroundSwitch(d, others[int(rng.integers(len(others)))])
    characters = []
    for ch in shot.characters:
        pose = ch.poses[ch.pose_of_drawing[d]]
        face = replace(
            random_expression(rng, pose), head_tilt=pose.head_tilt
        )  # the head stays: only the face is redrawn
        held = int(rng.integers(2, 6))
        pose_of_drawing = tuple(len(ch.poses) if d <= i < d + held else p for i, p in enumerate(ch.pose_of_drawing))
        characters.append(replace(ch, poses=(*ch.poses, face), pose_of_drawing=pose_of_drawing))
    return switch, tuple(characters)
