"""How one shot is staged: its drawings and holds, its camera, its characters.

Given a shot's length, kind (empty / wide / full / medium / closeup) and cast, these
functions decide, per drawing or per frame:

- which frames start a new drawing (held 2 or 3 frames: animation on 2s/3s) and
  which stretch is a held still (one drawing, camera frozen);
- the camera (pan / zoom / both, eased, optionally shaking; moving on 1s, i.e. every
  frame, or with the drawings), kept inside the painted set;
- each character's size, where it stands, its eased Bezier path (standing, entering,
  leaving, crossing, moving with an optional hop), its pose in every drawing (talking
  mouth flaps, blinks, gestures, walk cycles; expression changes in close-ups).

*Effective time* ``tau`` stops during held stills, so motion resumes where it paused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from celmask.tasks.synth.backgrounds import SetDesign, view_rect
from celmask.tasks.synth.characters import (
    CharacterDesign,
    Pose,
    gesture_poses,
    head_center,
    random_base_pose,
    random_expression,
    standing_height,
    talk_poses,
    walk_cycle,
)

SHAKE_MARGIN = 16.0
"""Set pixels kept free around every view for camera shake."""


@dataclass(frozen=True)
class CameraState:
    """Where the camera looks in one frame: set-pixel centre (shake included) and zoom."""

    cx: float
    cy: float
    zoom: float


@dataclass(frozen=True)
class CharacterPlan:
    """One character in one shot. Per-drawing tuples are indexed by the shot's drawing number."""

    character_id: int
    px_per_unit: float
    crop_bottom: float | None
    poses: tuple[Pose, ...]
    pose_of_drawing: tuple[int, ...]
    anchor_of_drawing: tuple[tuple[float, float], ...]
    """Set-pixel position of the character's anchor (ground point) in each drawing."""
    motion: str


def ease(u: float, kind: str) -> float:
    """Easing curves for camera and character moves; ``u`` clamped to [0, 1]."""
    u = min(1.0, max(0.0, u))
    if kind == "inout":
        return u * u * (3.0 - 2.0 * u)
    if kind == "in":
        return u * u
    if kind == "out":
        return 1.0 - (1.0 - u) ** 2
    if kind == "sine":
        return 0.5 - 0.5 * math.cos(math.pi * u)
    if kind == "linear":
        return u
    raise ValueError(f"unknown ease {kind!r}")


def bezier(p: np.ndarray, u: float) -> tuple[float, float]:
    """Point on the cubic Bezier with control points ``p`` (4, 2) at ``u``."""
    a = (1 - u) ** 3
    b = 3 * (1 - u) ** 2 * u
    c = 3 * (1 - u) * u * u
    d = u**3
    q = a * p[0] + b * p[1] + c * p[2] + d * p[3]
    return (float(q[0]), float(q[1]))


def plan_drawings(
    rng: np.random.Generator, n: int, timing: str, fps: Fraction
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Drawing start frames (local) and the held still stretches of a shot."""
    if timing == "still":
        return (0,), ((0, n),)
    hold: tuple[int, int] | None = None
    fpsf = float(fps)
    if rng.random() < 0.25 and n >= int(2.5 * fpsf):
        length = int(rng.integers(int(1.0 * fpsf), int(min(3.0 * fpsf, n / 2)) + 1))
        h0 = int(rng.integers(0, n - length + 1))
        hold = (h0, h0 + length)
    p3 = {"2s": 0.1, "3s": 0.9, "mixed": 0.5}[timing]
    starts = []
    i = 0
    while i < n:
        if hold is not None and hold[0] <= i < hold[1]:
            starts.append(i)
            i = hold[1]
            continue
        starts.append(i)
        step = 3 if rng.random() < p3 else 2
        if hold is not None and i < hold[0] < i + step:
            if hold[0] - i >= 2:
                step = hold[0] - i
            else:  # no 1-frame drawing before the hold: start the hold here instead
                starts.pop()
                hold = (i, hold[1])
                continue
        i += step
    return tuple(starts), ((hold,) if hold is not None else ())


def effective_time(n: int, still_spans: tuple[tuple[int, int], ...]) -> np.ndarray:
    """tau[i]: how many moving (non-held) frames precede local frame i; held time stands still."""
    moving = np.ones(n, np.int64)
    for a, b in still_spans:
        moving[a:b] = 0
    tau = np.zeros(n, np.int64)
    tau[1:] = np.cumsum(moving)[:-1]
    return tau


def clamp_center(
    c: tuple[float, float], z: float, set_design: SetDesign, width: int, height: int
) -> tuple[float, float]:
    hx = width / (2 * z) + SHAKE_MARGIN
    hy = height / (2 * z) + SHAKE_MARGIN
    x = min(max(c[0], hx), set_design.width - hx)
    y = min(max(c[1], hy), set_design.height - hy)
    return (float(round(x)), float(round(y)))


def stage_camera(
    rng: np.random.Generator,
    kind: str,
    set_design: SetDesign,
    n: int,
    drawings: tuple[int, ...],
    still_spans: tuple[tuple[int, int], ...],
    tau: np.ndarray,
    timing: str,
    width: int,
    height: int,
    content_start: int,
    calm0: int,
    calm1: int,
) -> tuple[str, bool, tuple[CameraState, ...]]:
    """The camera of a shot: (move name, moves on 1s?, one state per local frame).

    Moves are eased between two centres / zooms inside the painted set; the move runs
    in effective time (it pauses during held stills). On 2s/3s the camera state is
    taken at each drawing's first frame, so held frames stay identical; on 1s it
    changes every frame. A shake (decaying sinusoids) may start anywhere in the
    transition-free part ``[calm0, calm1)`` (episode frames).
    """
    r = rng.random()
    move = "static"
    if timing != "still":
        move = "static" if r < 0.4 else ("pan" if r < 0.65 else ("zoom" if r < 0.82 else "panzoom"))
    shake = timing != "still" and rng.random() < (0.3 if kind == "closeup" else 0.15) and calm1 - calm0 > 30
    on_ones = (move != "static" or shake) and rng.random() < 0.5

    z0 = 1.0 if rng.random() < 0.7 else float(rng.uniform(1.02, 1.2))
    z1 = z0
    if move in ("zoom", "panzoom"):
        z1 = z0 * float(rng.uniform(1.12, 1.35))
        if rng.random() < 0.4:
            z0, z1 = z1, z0  # zoom out
    zmin = min(z0, z1)
    vh = height / zmin
    frac = float(rng.uniform(0.35, 0.7)) if kind != "closeup" else float(rng.uniform(0.2, 0.8))
    cy = set_design.horizon - (frac - 0.5) * vh
    cx = float(rng.uniform(0.0, set_design.width))
    c0 = clamp_center((cx, cy), zmin, set_design, width, height)
    c1 = c0
    if move in ("pan", "panzoom"):
        if rng.random() < 0.8:
            d = float(rng.uniform(0.15, 0.55)) * width * (1 if rng.random() < 0.5 else -1)
            c1 = clamp_center((c0[0] + d, c0[1]), zmin, set_design, width, height)
            if abs(c1[0] - c0[0]) < 0.1 * width:  # hit the wall: pan the other way
                c1 = clamp_center((c0[0] - d, c0[1]), zmin, set_design, width, height)
        else:
            d = float(rng.uniform(0.1, 0.3)) * height * (1 if rng.random() < 0.5 else -1)
            c1 = clamp_center((c0[0], c0[1] + d), zmin, set_design, width, height)
    total = max(1, int(tau[-1]) + 1)
    m0 = float(rng.uniform(0.0, 0.3)) * total
    m1 = m0 + max(6.0, float(rng.uniform(0.5, 1.0)) * (total - m0))
    ease_kind = ("inout", "in", "out", "sine", "linear")[int(rng.integers(5))]

    shake_span = (0, 0)
    shake_amp = 0.0
    phases = rng.uniform(0, 2 * math.pi, 4)
    if shake:
        s0 = int(rng.integers(max(0, calm0 - content_start), max(1, calm1 - content_start - 20)))
        shake_span = (s0, min(n, s0 + int(rng.integers(10, 40))))
        shake_amp = float(rng.uniform(3.0, 10.0))
    frame_drawing = np.zeros(n, np.int64)
    for d, s in enumerate(drawings):
        frame_drawing[s:] = d
    in_still = np.zeros(n, bool)
    for a, b in still_spans:
        in_still[a:b] = True

    states = []
    for i in range(n):
        j = i if on_ones else drawings[int(frame_drawing[i])]
        u = ease((float(tau[j]) - m0) / (m1 - m0), ease_kind) if move != "static" else 0.0
        x = c0[0] + (c1[0] - c0[0]) * u
        y = c0[1] + (c1[1] - c0[1]) * u
        z = z0 * (z1 / z0) ** u
        if shake and shake_span[0] <= j < shake_span[1] and not in_still[i]:
            env = (1.0 - (j - shake_span[0]) / (shake_span[1] - shake_span[0])) ** 1.5
            x += shake_amp * env * (math.sin(2.1 * j + phases[0]) + 0.5 * math.sin(5.3 * j + phases[1]))
            y += shake_amp * env * (math.sin(2.7 * j + phases[2]) + 0.5 * math.sin(4.1 * j + phases[3]))
        if z == 1.0:  # at scale 1 the camera moves in whole pixels (a crop, no resampling blur)
            x, y = float(round(x)), float(round(y))
        states.append(CameraState(round(x, 4), round(y, 4), round(z, 6)))
    name = move + ("+shake" if shake else "")
    return name, on_ones, tuple(states)


def stage_characters(
    rng: np.random.Generator,
    kind: str,
    cast_ids: tuple[int, ...],
    set_design: SetDesign,
    cast: tuple[CharacterDesign, ...],
    camera: tuple[CameraState, ...],
    drawings: tuple[int, ...],
    tau: np.ndarray,
    width: int,
    height: int,
) -> tuple[CharacterPlan, ...]:
    """Size, path and poses of each cast member in a shot, back to front.

    Sizes and places are relative to the camera's view in the middle of the shot:
    tiny figures on the ground for wide shots, full figures for full shots, knee-up
    figures (legs cropped below the lowest row the camera ever shows) for medium
    shots, and a bust whose head fills much of the frame for close-ups.
    """
    if not cast_ids:
        return ()
    n = len(camera)
    mid = camera[n // 2]
    vx0, vy0, vx1, vy1 = view_rect((mid.cx, mid.cy), mid.zoom, (width, height))
    vw, vh = vx1 - vx0, vy1 - vy0
    # Lowest set row any frame of the shot can show, for cropping off-screen legs.
    max_bottom = max(c.cy + height / (2 * c.zoom) for c in camera) + 4.0
    total = max(1, int(tau[-1]) + 1)
    t_draw = [float(tau[s]) for s in drawings]
    plans = []
    slots = list(cast_ids)
    depths = sorted(float(rng.uniform(0.0, 1.0)) for _ in slots)  # back to front
    xs = sorted(float(rng.uniform(0.1, 0.9)) for _ in slots)
    order = list(rng.permutation(len(slots)))
    for slot, (cid, depth) in enumerate(zip(slots, depths)):
        d = cast[cid]
        x_frac = xs[order[slot]]
        hgt = standing_height(d)
        hc = head_center(d)
        if kind == "closeup":
            ppu = vh * float(rng.uniform(0.3, 0.45)) / d.head_h
            head = (vx0 + vw * float(rng.uniform(0.3, 0.7)), vy0 + vh * float(rng.uniform(0.35, 0.5)))
            base = (head[0] - hc[0] * ppu, head[1] - hc[1] * ppu)
            motion = "stand" if rng.random() < 0.7 else "move"
        else:
            if kind == "wide":
                h_px = vh * float(rng.uniform(0.28, 0.5)) * (0.7 + 0.3 * depth)
                feet_y = max(set_design.horizon + 6.0, vy0 + 0.55 * vh) + depth * 0.35 * vh
            elif kind == "full":
                h_px = vh * float(rng.uniform(0.6, 0.9)) * (0.8 + 0.2 * depth)
                feet_y = vy0 + vh * (0.84 + 0.14 * depth)
            else:  # medium: knees or waist up, feet below the frame
                h_px = vh * float(rng.uniform(1.3, 1.9)) * (0.85 + 0.15 * depth)
                feet_y = vy0 + vh * float(rng.uniform(0.05, 0.15)) + h_px
            ppu = h_px / hgt
            base = (vx0 + vw * x_frac, feet_y)
            r = rng.random()
            if kind == "medium":
                motion = "stand" if r < 0.75 else "move"
            else:
                motion = (
                    "stand"
                    if r < 0.45
                    else ("enter" if r < 0.6 else ("leave" if r < 0.75 else ("across" if r < 0.85 else "move")))
                )
        half_w = 2.2 * ppu  # about shoulders + a raised arm
        path, m0, m1, ease_kind = _path(rng, motion, base, vx0, vx1, vw, vh, half_w, total)
        walking = motion in ("enter", "leave", "across") or (motion == "move" and kind != "closeup")
        direction = 1.0 if path[3][0] >= path[0][0] else -1.0
        poses, pose_of_drawing, bob = _pose_schedule(rng, kind, walking, direction, t_draw, m0, m1, ppu)
        anchors = []
        walk_k = 0
        for t in t_draw:
            u = ease((t - m0) / (m1 - m0), ease_kind)
            x, y = bezier(path, u)
            if walking and m0 <= t < m1:
                y -= bob * (walk_k % 2)
                walk_k += 1
            anchors.append((round(x, 3), round(y, 3)))
        min_anchor_y = min(a[1] for a in anchors)
        crop = (max_bottom + SHAKE_MARGIN - min_anchor_y) / ppu + 0.2
        crop_bottom = crop if crop < 0.0 else None
        plans.append(
            CharacterPlan(
                character_id=cid,
                px_per_unit=round(ppu, 4),
                crop_bottom=None if crop_bottom is None else round(crop_bottom, 4),
                poses=tuple(poses),
                pose_of_drawing=tuple(pose_of_drawing),
                anchor_of_drawing=tuple(anchors),
                motion=motion,
            )
        )
    return tuple(plans)


def _path(
    rng: np.random.Generator,
    motion: str,
    base: tuple[float, float],
    vx0: float,
    vx1: float,
    vw: float,
    vh: float,
    half_w: float,
    total: int,
) -> tuple[np.ndarray, float, float, str]:
    """Cubic Bezier control points (set pixels) and the move window (effective frames)."""
    bx, by = base
    ease_kind = ("inout", "in", "out", "sine")[int(rng.integers(4))]
    side = -1.0 if rng.random() < 0.5 else 1.0
    off_left, off_right = vx0 - half_w - 8.0, vx1 + half_w + 8.0
    if motion == "stand":
        dx = float(rng.uniform(-0.03, 0.03)) * vw
        p0, p3 = (bx, by), (bx + dx, by)
        m0, m1 = 0.0, float(total)
        ease_kind = "sine"
    elif motion == "enter":
        p0 = (off_left if side < 0 else off_right, by + float(rng.uniform(-0.04, 0.04)) * vh)
        p3 = (bx, by)
        m0 = float(rng.uniform(0.0, 0.4)) * total
        m1 = m0 + float(rng.uniform(0.35, 0.6)) * total
    elif motion == "leave":
        p0 = (bx, by)
        p3 = (off_left if side < 0 else off_right, by + float(rng.uniform(-0.04, 0.04)) * vh)
        m0 = float(rng.uniform(0.2, 0.5)) * total
        m1 = m0 + float(rng.uniform(0.3, 0.5)) * total
    elif motion == "across":
        p0 = (off_left if side < 0 else off_right, by)
        p3 = (off_right if side < 0 else off_left, by + float(rng.uniform(-0.05, 0.05)) * vh)
        m0 = float(rng.uniform(0.0, 0.2)) * total
        m1 = m0 + float(rng.uniform(0.6, 0.8)) * total
    else:  # move: from here to another spot, maybe with a hop
        p0 = (bx, by)
        p3 = (bx + float(rng.uniform(0.15, 0.35)) * vw * side, by + float(rng.uniform(-0.03, 0.03)) * vh)
        m0 = float(rng.uniform(0.1, 0.4)) * total
        m1 = m0 + float(rng.uniform(0.3, 0.5)) * total
    lift = (
        float(rng.uniform(0.05, 0.25)) * vh
        if motion == "move" and rng.random() < 0.4
        else float(rng.uniform(-0.03, 0.03)) * vh
    )
    p1 = (p0[0] + (p3[0] - p0[0]) / 3, p0[1] + (p3[1] - p0[1]) / 3 - lift)
    p2 = (p0[0] + 2 * (p3[0] - p0[0]) / 3, p0[1] + 2 * (p3[1] - p0[1]) / 3 - lift)
    return np.array([p0, p1, p2, p3], dtype=np.float64), m0, max(m0 + 4.0, m1), ease_kind


def _pose_schedule(
    rng: np.random.Generator,
    kind: str,
    walking: bool,
    direction: float,
    t_draw: list[float],
    m0: float,
    m1: float,
    ppu: float,
) -> tuple[list[Pose], list[int], float]:
    """Poses of a character in a shot and which one each drawing uses."""
    base = random_base_pose(rng)
    n_draw = len(t_draw)
    if kind == "closeup":
        base = Pose(head_tilt=base.head_tilt, turn=base.turn * 0.6, gaze=base.gaze, brows=base.brows)
        poses = [base] + [random_expression(rng, base) for _ in range(int(rng.integers(4, 7)))]
        idx = []
        cur = 0
        while len(idx) < n_draw:
            idx.extend([cur] * int(rng.integers(1, 5)))
            cur = int(rng.integers(len(poses)))
        return poses, idx[:n_draw], 0.0
    activity = ("talk", "idle", "gesture", "talk")[int(rng.integers(4))]
    if activity == "talk":
        still = talk_poses(base)
    elif activity == "gesture":
        still = [base] + gesture_poses(rng, base)
    else:
        still = [base, replace(base, eyes="closed"), replace(base, head_tilt=base.head_tilt + 0.12)]
    poses = list(still)
    walk_ids: list[int] = []
    if walking:
        walk_ids = list(range(len(poses), len(poses) + 4))
        poses += walk_cycle(base, direction)
    idx = []
    walk_k = 0
    cur = 0
    for t in t_draw:
        if walking and m0 <= t < m1:
            idx.append(walk_ids[walk_k % 4])
            walk_k += 1
            continue
        if activity == "talk":
            cur = int(rng.choice(4, p=[0.35, 0.3, 0.25, 0.1]))
        elif rng.random() < 0.3:
            cur = int(rng.integers(len(still)))
        idx.append(cur)
    return poses, idx, 0.025 * ppu * 6.0
