"""Drawing a character pose into an RGBA sprite with its mask, and pasting sprites.

A character is built from flat colour *pieces* (hair, head, neck, torso, limbs, eyes,
mouth, ...). Each piece is rasterised into an id map at ``SUPERSAMPLE`` times the
output size; the id map then gives, with a few array ops, everything that makes
the picture look like a cel:

- flat fill: ``colour[id]``;
- cel shadow: a darker, cooler tone on the pixels of a piece whose neighbour at a
  fixed offset (the shadow direction) belongs to another line group, i.e. a band
  along one side;
- dark outlines 2-3 px wide where the line group of neighbouring pixels differs
  (eye and mouth details share the face's group, so they get no heavy line);
- alpha: the pieces plus the outline band, area-downsampled so edges are
  anti-aliased. The character's mask is ``alpha >= 128``.

Sprites are pasted so that the design's anchor (ground point between the feet) lands
on a given canvas point, back to front, writing a label map as they go: that is the
occlusion-exact visible mask of every character. Nothing here knows about shots or
time, so it can also composite cut-outs for detector training::

    sprite = draw_character(design, Pose(mouth="open"), px_per_unit=20.0)
    paste_sprite(canvas_rgb, canvas_labels, sprite, (320.0, 350.0), label=1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from celmask.tasks.synth.characters import CharacterDesign, Pose
from celmask.tasks.synth.palette import RGB, darken, lighten, shade

SUPERSAMPLE = 2
"""Pieces are rasterised at this multiple of the output size, then area-downsampled."""
_SHIFT = 4
"""Fixed-point bits for OpenCV drawing calls (sub-pixel precise polygons)."""


@dataclass(frozen=True)
class Sprite:
    """A drawn character. ``rgb`` is premultiplied by ``alpha``.

    rgb: (h, w, 3) uint8; alpha: (h, w) uint8; anchor: (x, y) of the design's anchor
    point (ground between the feet) in sprite pixel coordinates (may lie outside).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    anchor: tuple[float, float]

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: the pixels that count as the character."""
        return self.alpha >= 128


@dataclass
class _Piece:
    rgb: RGB
    shadow: RGB
    shadow_vec: tuple[float, float]  # units; (0, 0) = no shadow
    group: int


@dataclass
class _Drawing:
    """Primitives in unit coordinates, each tagged with a piece id (1-based)."""

    pieces: list[_Piece] = field(default_factory=list)
    prims: list[tuple] = field(default_factory=list)

    def piece(
        self, rgb: RGB, shadow_vec: tuple[float, float] = (0.0, 0.0), *, strength: float = 0.3, group: int | None = None
    ) -> int:
        pid = len(self.pieces) + 1
        if pid > 127:  # ids share a byte with the shadow bit (128) and the outline code (255)
            raise ValueError(f"too many pieces ({pid}) for the sprite code map")
        self.pieces.append(_Piece(rgb, shade(rgb, strength), shadow_vec, pid if group is None else group))
        return pid

    def poly(self, pid: int, pts: np.ndarray) -> None:
        self.prims.append(("poly", pid, np.asarray(pts, dtype=np.float64)))

    def ellipse(self, pid: int, c: np.ndarray, axes: tuple[float, float], angle: float) -> None:
        self.prims.append(("ellipse", pid, np.asarray(c, dtype=np.float64), axes, angle))

    def capsule(self, pid: int, p0: np.ndarray, p1: np.ndarray, width: float) -> None:
        self.prims.append(("capsule", pid, np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64), width))

    def stroke(self, pid: int, pts: np.ndarray, width: float) -> None:
        pts = np.asarray(pts, dtype=np.float64)
        for a, b in zip(pts[:-1], pts[1:]):
            self.capsule(pid, a, b, width)


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


class _Frame:
    """A local coordinate frame (origin + rotation) mapping to body units."""

    def __init__(self, origin: np.ndarray, theta: float) -> None:
        self.origin = np.asarray(origin, dtype=np.float64)
        self.theta = theta
        self.r = _rot(theta)

    def __call__(self, pts: np.ndarray | list) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64)
        return p @ self.r.T + self.origin


def _build(d: CharacterDesign, pose: Pose) -> _Drawing:
    """All pieces of one pose, back to front, in unit coordinates."""
    b = d.body
    dr = _Drawing()
    lv = np.array([math.cos(d.shadow_angle), math.sin(d.shadow_angle)])
    st = d.shadow_strength
    big = tuple(0.32 * lv)
    limb_v = tuple(0.42 * d.limb * lv)
    hair_v = tuple(0.38 * lv)

    pelvis = np.array([0.0, -b.leg])
    torso_f = _Frame(pelvis, pose.lean)
    neck_top = torso_f([0.0, -b.torso - b.neck])
    head_f = _Frame(neck_top, pose.lean + pose.head_tilt)
    hc = np.array([0.0, -0.92 * d.head_h])  # head centre in head frame
    hw, hh = d.head_w, d.head_h
    turn = pose.turn

    # -- back hair
    hair = dr.piece(d.hair, hair_v, strength=st)
    hair_group = hair
    _back_hair(dr, hair, d, head_f, hc)

    # -- neck (shadow under the chin)
    neck = dr.piece(d.skin, (0.0, -0.45 * hh), strength=st)
    nw = 0.28 * hw
    dr.poly(
        neck,
        torso_f(
            [[-nw, -b.torso + 0.2], [nw, -b.torso + 0.2], [nw, -b.torso - b.neck - 0.3], [-nw, -b.torso - b.neck - 0.3]]
        ),
    )

    # -- legs
    leg_rgb = d.bottom if d.bottom_style == "pants" else d.skin
    feet = []
    for side, (hip_a, knee_a) in ((-1, pose.legs[0:2]), (1, pose.legs[2:4])):
        hip_j = torso_f([side * d.hip * 0.48, -0.1])
        knee = hip_j + b.thigh * np.array([side * math.sin(hip_a), math.cos(hip_a)])
        a2 = hip_a + knee_a
        ankle = knee + (b.shin - 0.12) * np.array([side * math.sin(a2), math.cos(a2)])
        lw = d.limb * 1.15
        if d.bottom_style == "shorts":
            thigh_p = dr.piece(d.bottom, limb_v, strength=st)
            shin_p = dr.piece(d.skin, limb_v, strength=st)
            dr.capsule(shin_p, knee, ankle, lw * 0.9)
            dr.capsule(thigh_p, hip_j, knee, lw * 1.1)
        else:
            lp = dr.piece(leg_rgb, limb_v, strength=st)
            dr.capsule(lp, hip_j, knee, lw)
            dr.capsule(lp, knee, ankle, lw * 0.9)
        feet.append((side, ankle))
    for side, ankle in feet:
        shoe = dr.piece(d.shoes, limb_v, strength=st)
        dr.ellipse(shoe, ankle + np.array([side * 0.12, 0.08]), (0.42 * d.limb / 0.38, 0.2), 0.0)

    # -- torso
    sh = d.shoulder
    wa = 0.72 * d.hip
    torso = dr.piece(d.top, big, strength=st)
    dr.poly(
        torso,
        torso_f(
            [
                [-sh, -b.torso + 0.25],
                [-sh * 0.55, -b.torso - 0.02],
                [sh * 0.55, -b.torso - 0.02],
                [sh, -b.torso + 0.25],
                [sh * 0.92, -b.torso + 0.9],
                [wa, -0.45 * b.torso],
                [d.hip, 0.05],
                [-d.hip, 0.05],
                [-wa, -0.45 * b.torso],
                [-sh * 0.92, -b.torso + 0.9],
            ]
        ),
    )
    collar = dr.piece(d.accent, (0.0, 0.0))
    dr.poly(collar, torso_f([[-0.22, -b.torso + 0.05], [0.22, -b.torso + 0.05], [0.0, -b.torso + 0.42]]))
    if d.bottom_style == "skirt":
        skirt = dr.piece(d.bottom, big, strength=st)
        flare = d.hip * 1.45
        ln = 0.42 * b.leg
        dr.poly(
            skirt,
            torso_f(
                [
                    [-wa * 1.02, -0.3 * b.torso],
                    [wa * 1.02, -0.3 * b.torso],
                    [flare, ln],
                    [0.3 * flare, ln + 0.12],
                    [-0.3 * flare, ln + 0.12],
                    [-flare, ln],
                ]
            ),
        )
    else:
        belt = dr.piece(d.bottom, big, strength=st)
        dr.poly(
            belt,
            torso_f(
                [[-wa * 1.02, -0.25 * b.torso], [wa * 1.02, -0.25 * b.torso], [d.hip * 1.03, 0.3], [-d.hip * 1.03, 0.3]]
            ),
        )

    # -- arms (in front of the torso)
    for side, (sa, ea) in ((-1, pose.arms[0:2]), (1, pose.arms[2:4])):
        shoulder = torso_f([side * (sh - 0.12), -b.torso + 0.32])
        elbow = shoulder + b.upper_arm * (_rot(pose.lean) @ np.array([side * math.sin(sa), math.cos(sa)]))
        a2 = sa + ea
        wrist = elbow + b.forearm * (_rot(pose.lean) @ np.array([side * math.sin(a2), math.cos(a2)]))
        sleeve = dr.piece(d.top, limb_v, strength=st)
        dr.capsule(sleeve, shoulder, elbow, d.limb * 1.15)
        if d.long_sleeves:
            dr.capsule(sleeve, elbow, wrist, d.limb * 1.05)
        else:
            fore = dr.piece(d.skin, limb_v, strength=st)
            dr.capsule(fore, elbow, wrist, d.limb * 0.9)
        hand = dr.piece(d.skin, limb_v, strength=st)
        dr.ellipse(
            hand,
            wrist + 0.12 * (wrist - elbow) / max(1e-6, float(np.linalg.norm(wrist - elbow))),
            (0.27 * d.limb / 0.38, 0.3 * d.limb / 0.38),
            0.0,
        )

    # -- head
    for side in (-1, 1):
        ear = dr.piece(d.skin, limb_v, strength=st)
        dr.ellipse(ear, head_f(hc + [side * 0.98 * hw, 0.12]), (0.2, 0.28), math.degrees(head_f.theta))
    face = dr.piece(d.skin, big, strength=st)
    top = _arc(0.0, 0.0, hw, hh, math.pi, 2 * math.pi, 20)
    jaw = np.array(
        [
            [hw, 0.05],
            [0.92 * hw, 0.45 * hh],
            [0.5 * hw, 0.88 * hh],
            [0.08 * turn, 1.06 * hh],
            [-0.5 * hw, 0.88 * hh],
            [-0.92 * hw, 0.45 * hh],
            [-hw, 0.05],
        ]
    )
    dr.poly(face, head_f(np.concatenate([top, jaw]) + hc))
    _face(dr, d, pose, head_f, hc, face)

    # -- front hair (bangs) and its highlight
    bangs = dr.piece(d.hair, hair_v, strength=st, group=hair_group)
    _bangs(dr, bangs, d, head_f, hc, turn)
    hl = dr.piece(lighten(d.hair, 0.35), (0.0, 0.0), group=hair_group)
    band = np.concatenate(
        [
            _arc(0.05, -0.2, 0.72 * hw, 0.62 * hh, 1.15 * math.pi, 1.55 * math.pi, 8),
            _arc(0.05, -0.2, 0.6 * hw, 0.5 * hh, 1.55 * math.pi, 1.15 * math.pi, 8),
        ]
    )
    dr.poly(hl, head_f(band + hc))
    if d.accessory == "ribbon":
        rib = dr.piece(d.accent, limb_v, strength=st)
        c = np.array([0.62 * hw, -0.78 * hh])
        dr.poly(rib, head_f(hc + c + np.array([[0, 0], [0.45, -0.3], [0.5, 0.25]])))
        dr.poly(rib, head_f(hc + c + np.array([[0, 0], [-0.45, -0.3], [-0.5, 0.25]])))
        knot = dr.piece(darken(d.accent, 0.15), (0.0, 0.0))
        dr.ellipse(knot, head_f(hc + c), (0.12, 0.12), 0.0)
    elif d.accessory == "clip":
        clip = dr.piece(d.accent, (0.0, 0.0))
        dr.poly(clip, head_f(hc + np.array([[-0.75, -0.5], [-0.35, -0.62], [-0.32, -0.52], [-0.72, -0.4]])))
    return dr


def _back_hair(dr: _Drawing, pid: int, d: CharacterDesign, hf: _Frame, hc: np.ndarray) -> None:
    hw, hh = d.head_w, d.head_h
    style = d.hair_style
    top = _arc(0.0, -0.05, 1.14 * hw, 1.12 * hh, math.pi, 2 * math.pi, 20)
    if style == "spiky":
        t = np.linspace(0.85 * math.pi, 2.15 * math.pi, 13)
        r = np.where(np.arange(13) % 2 == 0, 1.12, 1.55)
        pts = np.stack([r * hw * np.cos(t), -0.05 + r * hh * np.sin(t)], axis=1)
        dr.poly(pid, hf(np.concatenate([pts, [[0.9 * hw, 0.5], [-0.9 * hw, 0.5]]]) + hc))
        return
    if style in ("short", "ponytail", "twintails"):
        dr.ellipse(pid, hf(hc + [0.0, -0.06]), (1.13 * hw, 1.12 * hh), math.degrees(hf.theta))
        dr.poly(pid, hf(np.concatenate([top, [[1.05 * hw, 0.55], [-1.05 * hw, 0.55]]]) + hc))
    if style == "bob":
        dr.poly(pid, hf(np.concatenate([top, [[1.22 * hw, 1.0], [0.6, 1.12], [-0.6, 1.12], [-1.22 * hw, 1.0]]]) + hc))
    elif style == "long":
        L = d.hair_length
        edge = [[1.4 * hw, L], [0.9, L + 0.25], [0.3, L - 0.1], [-0.3, L + 0.2], [-0.9, L - 0.05], [-1.4 * hw, L]]
        dr.poly(pid, hf(np.concatenate([top, edge]) + hc))
    elif style == "ponytail":
        L = d.hair_length
        tail = np.array([[0.5, -0.9], [1.3, -0.8], [1.75, 0.2], [1.6, L * 0.8], [1.25, L], [1.2, 0.3], [0.8, -0.4]])
        dr.poly(pid, hf(tail + hc))
    elif style == "twintails":
        L = d.hair_length
        for s in (-1, 1):
            tail = np.array(
                [[0.85, -0.75], [1.45, -0.55], [1.85, 0.6], [1.7, L], [1.45, L + 0.3], [1.35, 0.5], [1.0, -0.35]]
            )
            tail[:, 0] *= s
            dr.poly(pid, hf(tail + hc))


def _bangs(dr: _Drawing, pid: int, d: CharacterDesign, hf: _Frame, hc: np.ndarray, turn: float) -> None:
    hw, hh = d.head_w, d.head_h
    top = _arc(0.0, -0.03, 1.1 * hw, 1.1 * hh, math.pi, 2 * math.pi, 22)
    n = d.bangs
    xs = np.linspace(0.78 * hw, -0.78 * hw, 2 * n + 1) + 0.12 * turn
    ys = np.where(np.arange(2 * n + 1) % 2 == 1, -0.02 + 0.1 * np.cos(np.arange(2 * n + 1)), -0.42)
    fringe = np.stack([xs, ys * hh], axis=1)
    right_lock = [[1.1 * hw, 0.0], [1.02 * hw, 0.75 * hh], [0.86 * hw, 0.2 * hh]]
    left_lock = [[-0.86 * hw, 0.2 * hh], [-1.02 * hw, 0.75 * hh], [-1.1 * hw, 0.0]]
    if d.hair_style == "spiky":
        right_lock = [[1.1 * hw, 0.0], [0.9 * hw, 0.3 * hh]]
        left_lock = [[-0.9 * hw, 0.3 * hh], [-1.1 * hw, 0.0]]
    pts = np.concatenate([top, right_lock, fringe, left_lock])
    dr.poly(pid, hf(pts + hc))


def _face(dr: _Drawing, d: CharacterDesign, pose: Pose, hf: _Frame, hc: np.ndarray, face: int) -> None:
    """Eyes, brows, nose, mouth, blush: no outlines (same line group as the face)."""
    hw, hh = d.head_w, d.head_h
    turn = pose.turn
    ang = math.degrees(hf.theta)
    lw = 0.035 + 0.006 * d.line_px
    line = d.line
    if d.blush:
        bl = dr.piece((240, 150, 150), group=face)
        for s in (-1, 1):
            dr.ellipse(bl, hf(hc + [s * 0.52 * hw + 0.18 * turn, 0.5 * hh]), (0.2, 0.08), ang)
    ex, ey = 0.42 * hw, 0.3 * hh
    rx, ry = 0.2 * d.eye_size, 0.26 * d.eye_size
    for s in (-1, 1):
        far = (s * turn) < 0  # the eye on the side the face turns away from is narrower
        sx = 1.0 - 0.25 * abs(turn) if far else 1.0
        c = np.array([s * ex + 0.28 * turn, ey])
        erx = rx * sx
        if pose.eyes in ("open", "half", "wide"):
            wide = 1.12 if pose.eyes == "wide" else 1.0
            white = dr.piece((250, 250, 252), group=face)
            dr.ellipse(white, hf(hc + c), (erx * wide, ry * wide), ang)
            ir = 0.55 if pose.eyes == "wide" else 0.82
            g = np.array(pose.gaze) * [0.3 * erx, 0.2 * ry] + [0.0, 0.08 * ry]
            iris = dr.piece(d.eye, group=face)
            dr.ellipse(iris, hf(hc + c + g), (erx * ir, ry * ir * 1.02), ang)
            pupil = dr.piece(darken(d.eye, 0.55), group=face)
            dr.ellipse(pupil, hf(hc + c + g + [0, 0.08 * ry]), (erx * ir * 0.48, ry * ir * 0.52), ang)
            hi = dr.piece((255, 255, 255), group=face)
            dr.ellipse(hi, hf(hc + c + g + [-0.3 * erx, -0.3 * ry]), (0.26 * erx, 0.22 * ry), ang)
            dr.ellipse(hi, hf(hc + c + g + [0.3 * erx, 0.35 * ry]), (0.12 * erx, 0.1 * ry), ang)
            lid_y = -ry * wide
            if pose.eyes == "half":
                lid = dr.piece(d.skin, group=face)
                dr.poly(
                    lid,
                    hf(
                        hc
                        + c
                        + np.concatenate(
                            [
                                _arc(0, 0, 1.15 * erx, 1.1 * ry, math.pi, 2 * math.pi, 10),
                                [[1.15 * erx, 0.05 * ry], [-1.15 * erx, 0.05 * ry]],
                            ]
                        )
                    ),
                )
                lid_y = 0.0
            lash = dr.piece(line, group=face)
            if pose.eyes == "half":
                lash_pts = np.array([[-1.15 * erx, 0.05 * ry], [0.0, -0.05 * ry], [1.15 * erx, 0.05 * ry]])
            else:
                lash_pts = _arc(0.0, lid_y * 0.05, 1.12 * erx, ry * wide * 1.05, 1.08 * math.pi, 1.92 * math.pi, 9)
            dr.stroke(lash, hf(hc + c + lash_pts), 1.9 * lw)
            flick = np.array(
                [lash_pts[-1] if s > 0 else lash_pts[0], (lash_pts[-1] if s > 0 else lash_pts[0]) + [s * 0.12, -0.08]]
            )
            dr.stroke(lash, hf(hc + c + flick), 1.6 * lw)
        elif pose.eyes == "closed":
            lash = dr.piece(line, group=face)
            dr.stroke(
                lash,
                hf(hc + c + _arc(0.0, -0.1 * ry, 1.05 * erx, 0.45 * ry, 0.1 * math.pi, 0.9 * math.pi, 9)),
                1.8 * lw,
            )
        else:  # happy: upward arcs
            lash = dr.piece(line, group=face)
            dr.stroke(
                lash, hf(hc + c + _arc(0.0, 0.25 * ry, 1.0 * erx, 0.55 * ry, 1.1 * math.pi, 1.9 * math.pi, 9)), 1.8 * lw
            )
        # brows
        by = ey - ry * 1.35 - 0.06
        inner_dy = {"neutral": 0.0, "angry": 0.14, "sad": -0.14, "up": -0.12}[pose.brows]
        lift = -0.1 if pose.brows == "up" else 0.0
        brow = dr.piece(darken(d.hair, 0.35), group=face)
        bx = s * ex + 0.28 * turn
        dr.stroke(
            brow,
            hf(
                hc
                + np.array(
                    [
                        [bx - s * 0.22 * sx, by + inner_dy + lift],
                        [bx + s * 0.05, by - 0.05 + lift],
                        [bx + s * 0.25 * sx, by + 0.03 + lift],
                    ]
                )
            ),
            1.2 * lw,
        )
    # nose
    nose = dr.piece(shade(d.skin, 0.45), group=face)
    nx = 0.36 * turn
    dr.stroke(nose, hf(hc + np.array([[nx, 0.42 * hh], [nx + 0.05, 0.5 * hh]])), lw)
    # mouth
    mx, my = 0.3 * turn, 0.72 * hh
    m = pose.mouth
    if m in ("closed", "smile", "frown"):
        mp = dr.piece(darken(d.skin, 0.55), group=face)
        if m == "closed":
            pts = np.array([[mx - 0.14, my], [mx + 0.14, my + 0.01]])
        elif m == "smile":
            pts = _arc(mx, my - 0.08, 0.2, 0.12, 0.15 * math.pi, 0.85 * math.pi, 7)
        else:
            pts = _arc(mx, my + 0.1, 0.17, 0.09, 1.15 * math.pi, 1.85 * math.pi, 7)
        dr.stroke(mp, hf(hc + pts), 1.3 * lw)
    else:
        size = {"open": (0.14, 0.11), "wide": (0.22, 0.2), "o": (0.08, 0.1)}[m]
        rim = dr.piece(line, group=face)
        inner = dr.piece((150, 40, 50), group=face)
        tongue = dr.piece((235, 110, 120), group=face)
        if m == "wide":
            shape = np.concatenate(
                [
                    [[mx - size[0], my - 0.06], [mx + size[0], my - 0.06]],
                    _arc(mx, my - 0.06, size[0], size[1] * 1.4, 0.0, math.pi, 12),
                ]
            )
            dr.poly(rim, hf(hc + (shape - [mx, my]) * 1.12 + [mx, my]))
            dr.poly(inner, hf(hc + shape))
        else:
            dr.ellipse(rim, hf(hc + [mx, my]), (size[0] + 0.035, size[1] + 0.035), ang)
            dr.ellipse(inner, hf(hc + [mx, my]), size, ang)
        dr.ellipse(tongue, hf(hc + [mx, my + 0.55 * size[1]]), (0.6 * size[0], 0.35 * size[1]), ang)


def _prim_extent(prim: tuple) -> tuple[np.ndarray, float]:
    """Points of a primitive and the radius around them it can cover (units)."""
    kind = prim[0]
    if kind == "poly":
        return prim[2], 0.0
    if kind == "ellipse":
        return prim[2][None, :], float(max(prim[3]))
    return np.stack([prim[2], prim[3]]), prim[4] / 2.0


def draw_character(
    design: CharacterDesign, pose: Pose, px_per_unit: float, *, crop_bottom: float | None = None
) -> Sprite:
    """Render one pose of a design as a premultiplied RGBA sprite.

    ``px_per_unit``: output pixels per head unit (a full-body character is about
    ``standing_height(design) * px_per_unit`` pixels tall). ``crop_bottom`` (units,
    anchor-relative, y down): nothing below this line is drawn, for busts whose lower
    body is off-screen anyway.
    """
    if px_per_unit <= 0:
        raise ValueError(f"px_per_unit must be > 0, got {px_per_unit}")
    dr = _build(design, pose)
    k = px_per_unit * SUPERSAMPLE
    line_ss = max(2, int(round(design.line_px * SUPERSAMPLE)))
    pad = line_ss + 4
    pts, rads = zip(*(_prim_extent(p) for p in dr.prims))
    lo = np.min([p.min(axis=0) - r for p, r in zip(pts, rads)], axis=0)
    hi = np.max([p.max(axis=0) + r for p, r in zip(pts, rads)], axis=0)
    if crop_bottom is not None:
        hi[1] = min(hi[1], crop_bottom)
        if hi[1] <= lo[1]:
            raise ValueError(f"crop_bottom={crop_bottom} leaves nothing to draw")
    # Pixel origin snapped to a multiple of SUPERSAMPLE so the downsample grid aligns.
    ox = math.floor((lo[0] * k - pad) / SUPERSAMPLE) * SUPERSAMPLE
    oy = math.floor((lo[1] * k - pad) / SUPERSAMPLE) * SUPERSAMPLE
    w = int(math.ceil((hi[0] * k + pad - ox) / SUPERSAMPLE)) * SUPERSAMPLE
    h = int(math.ceil((hi[1] * k + (pad if crop_bottom is None else 0) - oy) / SUPERSAMPLE)) * SUPERSAMPLE
    origin = np.array([ox, oy], dtype=np.float64)
    scale = float(1 << _SHIFT)

    def fix(p: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(p) * k - origin) * scale).astype(np.int32)

    ids = np.zeros((h, w), np.uint8)
    for prim in dr.prims:
        kind, pid = prim[0], prim[1]
        if kind == "poly":
            cv2.fillPoly(ids, [fix(prim[2]).reshape(-1, 1, 2)], int(pid), cv2.LINE_8, _SHIFT)
        elif kind == "ellipse":
            c = fix(prim[2])
            axes = (max(1, int(round(prim[3][0] * k * scale))), max(1, int(round(prim[3][1] * k * scale))))
            cv2.ellipse(ids, (int(c[0]), int(c[1])), axes, float(prim[4]), 0.0, 360.0, int(pid), -1, cv2.LINE_8, _SHIFT)
        else:  # capsule
            p0, p1 = fix(prim[2]), fix(prim[3])
            wpx = max(1.0, prim[4] * k)
            cv2.line(
                ids,
                (int(p0[0]), int(p0[1])),
                (int(p1[0]), int(p1[1])),
                int(pid),
                max(1, int(round(wpx))),
                cv2.LINE_8,
                _SHIFT,
            )
            r = int(round(wpx / 2 * scale))
            for p in (p0, p1):
                cv2.circle(ids, (int(p[0]), int(p[1])), r, int(pid), -1, cv2.LINE_8, _SHIFT)

    # One code per pixel, so that a single table lookup paints the sprite:
    # piece id (1..127), +128 where the piece is in shadow, 255 on outlines, 0 = empty.
    palette = np.zeros((1, 256, 3), np.uint8)
    group = np.zeros(256, np.uint8)
    for i, p in enumerate(dr.pieces, start=1):
        palette[0, i], palette[0, 128 + i], group[i] = p.rgb, p.shadow, p.group
    palette[0, 255] = design.line
    g = cv2.LUT(ids, group)

    # Cel shadow: pixels whose neighbour in the shadow direction lies in another line
    # group (so the eyes and mouth do not cast bands across the face).
    by_vec: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(dr.pieces, start=1):
        if p.shadow_vec != (0.0, 0.0):
            v = (int(round(p.shadow_vec[0] * k)), int(round(p.shadow_vec[1] * k)))
            if v != (0, 0):
                by_vec.setdefault(v, []).append(i)
    shadow = np.zeros((h, w), np.uint8)
    for (vx, vy), members in sorted(by_vec.items()):
        shifted = np.zeros_like(g)
        ys0, ys1 = max(0, -vy), min(h, h - vy)
        xs0, xs1 = max(0, -vx), min(w, w - vx)
        if ys1 > ys0 and xs1 > xs0:
            shifted[ys0:ys1, xs0:xs1] = g[ys0 + vy : ys1 + vy, xs0 + vx : xs1 + vx]
        sel = np.zeros(256, np.uint8)
        sel[members] = 128
        cv2.bitwise_or(shadow, cv2.bitwise_and(cv2.LUT(ids, sel), cv2.compare(shifted, g, cv2.CMP_NE)), dst=shadow)

    # Outlines where the line group changes, widened to the design's line weight.
    edge = np.zeros((h, w), np.uint8)
    dx = cv2.compare(g[:, 1:], g[:, :-1], cv2.CMP_NE)
    dy = cv2.compare(g[1:, :], g[:-1, :], cv2.CMP_NE)
    for dst, src in ((edge[:, 1:], dx), (edge[:, :-1], dx), (edge[1:, :], dy), (edge[:-1, :], dy)):
        cv2.bitwise_or(dst, src, dst=dst)
    ksz = max(1, line_ss - 1)
    if ksz > 1:
        edge = cv2.dilate(edge, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksz, ksz)))

    code = cv2.bitwise_or(cv2.bitwise_or(ids, shadow), edge)
    rgb = cv2.LUT(cv2.merge([code, code, code]), palette)  # premultiplied: code 0 is black
    alpha = cv2.compare(code, 0, cv2.CMP_GT)
    out_w, out_h = w // SUPERSAMPLE, h // SUPERSAMPLE
    pm_small = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
    a_small = cv2.resize(alpha, (out_w, out_h), interpolation=cv2.INTER_AREA)
    anchor = (-ox / SUPERSAMPLE, -oy / SUPERSAMPLE)
    return Sprite(rgb=pm_small, alpha=a_small, anchor=anchor)


def paste_sprite(
    rgb: np.ndarray, labels: np.ndarray | None, sprite: Sprite, at: tuple[float, float], label: int
) -> None:
    """Composite ``sprite`` over ``rgb`` IN PLACE so its anchor lands on ``at`` (x, y).

    rgb: (H, W, 3) uint8 canvas. labels: (H, W) uint8 or None; where the sprite's mask
    is set it is overwritten with ``label``, so pasting back to front leaves each
    pixel labelled by the front-most character (occlusion). Parts outside the canvas
    are clipped.
    """
    H, W = rgb.shape[:2]
    x0 = math.floor(at[0] - sprite.anchor[0] + 0.5)  # not round(): ties must not depend on parity
    y0 = math.floor(at[1] - sprite.anchor[1] + 0.5)
    sh, sw = sprite.alpha.shape
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(W, x0 + sw), min(H, y0 + sh)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    sx0, sy0 = cx0 - x0, cy0 - y0
    sx1, sy1 = sx0 + (cx1 - cx0), sy0 + (cy1 - cy0)
    a = sprite.alpha[sy0:sy1, sx0:sx1]
    dst = rgb[cy0:cy1, cx0:cx1]
    inv = cv2.merge([255 - a] * 3)
    # "over" with premultiplied colour: dst * (1 - alpha) + sprite (saturating uint8 ops)
    dst[...] = cv2.add(cv2.multiply(dst, inv, scale=1.0 / 255.0), sprite.rgb[sy0:sy1, sx0:sx1])
    if labels is not None:
        labels[cy0:cy1, cx0:cx1][a >= 128] = label
