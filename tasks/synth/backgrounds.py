"""Painted background sets and the camera that looks at them.

A *set* is one painted image larger than the frame (rooms with walls, floor,
windows and furniture; outdoor scenes with sky, clouds, hills, trees, buildings and
poles; or abstract gradients with speed lines for close-ups), painted as flat colour
polygons with dark outlines, a cel-shadow side on objects, and a static painterly
texture. Several shots can share one set (shot / reverse-shot in one room), so a cut
is not trivially a change of palette.

The camera maps a frame onto the set: centre, zoom (>= 1: one set pixel is ``zoom``
frame pixels) and a shake offset; :func:`camera_matrix` gives the 2x3 affine for
``cv2.warpAffine`` from set to frame pixels::

    bg = paint_set(random_set(child_rng(seed, "sets", 0), set_id=0, width=1280, height=540))
    m = camera_matrix((640.0, 270.0), 1.2, (0.0, 0.0), frame_size=(640, 360))
    frame = cv2.warpAffine(bg, m, (640, 360), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from celmask.tasks.synth.palette import RGB, darken, hsv, lighten, random_colour, shade
from celmask.tasks.synth.seeding import child_rng

SET_KINDS = ("room", "outdoor", "abstract")


@dataclass(frozen=True)
class SetDesign:
    """A painted set. ``horizon`` is the y (set pixels) of the floor line / ground line."""

    set_id: int
    kind: str
    width: int
    height: int
    horizon: int
    seed: int
    line: RGB
    line_px: int
    base_hue: float
    saturation: float
    texture: float
    """Amplitude of the painterly texture (grey levels)."""

    def __post_init__(self) -> None:
        if self.kind not in SET_KINDS:
            raise ValueError(f"kind must be one of {SET_KINDS}, got {self.kind!r}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"set too small: {self.width}x{self.height}")


def random_set(rng: np.random.Generator, *, set_id: int, width: int, height: int, kind: str | None = None) -> SetDesign:
    """A set design; the painting itself is made by :func:`paint_set`."""
    if kind is None:
        kind = ("room", "room", "outdoor", "outdoor", "abstract")[int(rng.integers(5))]
    return SetDesign(
        set_id=set_id,
        kind=kind,
        width=width,
        height=height,
        horizon=int(height * rng.uniform(0.55, 0.72)),
        seed=int(rng.integers(2**31)),
        line=((30, 24, 30), (45, 35, 30), (20, 25, 40))[int(rng.integers(3))],
        line_px=int(rng.integers(2, 4)),
        base_hue=float(rng.random()),
        saturation=float(rng.uniform(0.15, 0.55)),
        texture=float(rng.uniform(3.0, 9.0)),
    )


# --------------------------------------------------------------------------- painting


def _vgrad(img: np.ndarray, y0: int, y1: int, c0: RGB, c1: RGB) -> None:
    """Vertical gradient c0 -> c1 over rows [y0, y1) of ``img`` in place."""
    y0, y1 = max(0, y0), min(img.shape[0], y1)
    if y1 <= y0:
        return
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None]
    col = (1 - t) * np.array(c0, np.float32) + t * np.array(c1, np.float32)
    img[y0:y1] = np.round(col).astype(np.uint8)[:, None, :]


def _shape(img: np.ndarray, pts: np.ndarray, fill: RGB, line: RGB, lw: int) -> None:
    """A flat colour polygon with a dark outline."""
    p = np.round(np.asarray(pts)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [p], fill, cv2.LINE_AA)
    cv2.polylines(img, [p], True, line, lw, cv2.LINE_AA)


def _box(
    img: np.ndarray,
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    fill: RGB,
    line: RGB,
    lw: int,
    shadow_side: float = 0.0,
    strength: float = 0.3,
) -> None:
    """A rectangle object with an optional cel-shadow band on its right/left side."""
    _shape(img, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], fill, line, lw)
    if shadow_side:
        w = (x1 - x0) * 0.22
        xs = (x1 - w, x1) if shadow_side > 0 else (x0, x0 + w)
        _shape(img, [[xs[0], y0], [xs[1], y0], [xs[1], y1], [xs[0], y1]], shade(fill, strength), line, lw)


def _texture(rng: np.random.Generator, h: int, w: int, amp: float) -> np.ndarray:
    """Static painterly texture: blotches and brush-like streaks plus fine grain, int16."""
    blot = cv2.resize(
        rng.normal(0, 1, (max(2, h // 40), max(2, w // 40))).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    streak = cv2.resize(
        rng.normal(0, 1, (max(2, h // 6), max(2, w // 60))).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR
    )
    grain = rng.normal(0, 0.7, (h, w)).astype(np.float32)  # faint: strong grain only feeds the encoder noise
    return np.round(amp * (0.6 * blot + 0.4 * streak) + grain).astype(np.int16)


def paint_set(design: SetDesign) -> np.ndarray:
    """Paint the set: (height, width, 3) uint8 RGB. Deterministic in the design."""
    rng = child_rng(design.seed, "paint")
    h, w = design.height, design.width
    img = np.zeros((h, w, 3), np.uint8)
    if design.kind == "room":
        _paint_room(img, design, rng)
    elif design.kind == "outdoor":
        _paint_outdoor(img, design, rng)
    else:
        _paint_abstract(img, design, rng)
    tex = _texture(rng, h, w, design.texture)
    out = img.astype(np.int16) + tex[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _paint_room(img: np.ndarray, d: SetDesign, rng: np.random.Generator) -> None:
    h, w, hz, lw, ln = d.height, d.width, d.horizon, d.line_px, d.line
    hue, sat = d.base_hue, d.saturation
    wall_top = hsv(hue, sat * 0.6, float(rng.uniform(0.72, 0.95)))
    _vgrad(img, 0, hz, lighten(wall_top, 0.1), darken(wall_top, 0.12))
    # wainscot band
    band = int(hz - (hz * rng.uniform(0.18, 0.3)))
    _box(img, -lw, band, w + lw, hz, darken(wall_top, 0.2), ln, lw)
    # floor with perspective boards
    floor = hsv(hue + float(rng.uniform(0.3, 0.7)), sat * 0.8, float(rng.uniform(0.45, 0.75)))
    _vgrad(img, hz, h, darken(floor, 0.1), lighten(floor, 0.05))
    cv2.line(img, (0, hz), (w, hz), ln, lw, cv2.LINE_AA)
    vx = w * rng.uniform(0.3, 0.7)
    for x in np.arange(-w, 2 * w, w / rng.uniform(8, 14)):
        cv2.line(img, (int(vx + (x - vx) * 0.25), hz), (int(x), h), darken(floor, 0.3), 1, cv2.LINE_AA)
    # windows, doors, furniture spread along the wall
    x = float(rng.uniform(0, w * 0.1))
    while x < w:
        kind = int(rng.integers(5))
        ow = float(rng.uniform(0.08, 0.2)) * w
        if kind == 0:  # window with sky
            y0, y1 = hz * rng.uniform(0.12, 0.25), hz * rng.uniform(0.55, 0.7)
            _box(img, x - 6, y0 - 6, x + ow + 6, y1 + 6, lighten(wall_top, 0.4), ln, lw)
            sub = img[int(y0) : int(y1), int(x) : int(x + ow)]
            _vgrad(sub, 0, sub.shape[0], hsv(0.58, 0.55, 0.95), hsv(0.55, 0.2, 1.0))
            cv2.rectangle(img, (int(x), int(y0)), (int(x + ow), int(y1)), ln, lw, cv2.LINE_AA)
            cv2.line(img, (int(x + ow / 2), int(y0)), (int(x + ow / 2), int(y1)), ln, lw, cv2.LINE_AA)
            cv2.line(img, (int(x), int((y0 + y1) / 2)), (int(x + ow), int((y0 + y1) / 2)), ln, lw, cv2.LINE_AA)
            curtain = random_colour(rng, s=(0.3, 0.7), v=(0.6, 0.9))
            _shape(
                img,
                [[x - 14, y0 - 10], [x + ow * 0.25, y0 - 10], [x + ow * 0.1, y1 + 10], [x - 14, y1 + 14]],
                curtain,
                ln,
                lw,
            )
        elif kind == 1:  # door
            y0 = hz * rng.uniform(0.1, 0.2)
            col = hsv(hue + 0.08, sat, float(rng.uniform(0.35, 0.6)))
            _box(img, x, y0, x + ow * 0.8, hz, col, ln, lw, shadow_side=1.0)
            cv2.circle(
                img, (int(x + ow * 0.65), int((y0 + hz) * 0.55)), max(3, lw * 2), (210, 190, 90), -1, cv2.LINE_AA
            )
        elif kind == 2:  # shelf with books
            y0 = hz * rng.uniform(0.2, 0.4)
            col = hsv(0.07, 0.5, float(rng.uniform(0.35, 0.6)))
            _box(img, x, y0, x + ow, hz + 8, col, ln, lw, shadow_side=1.0)
            for row in range(3):
                ry0 = y0 + (hz - y0) * (0.08 + 0.3 * row)
                ry1 = ry0 + (hz - y0) * 0.22
                bx = x + 6
                while bx < x + ow - 14:
                    bw = float(rng.uniform(6, 14))
                    _box(
                        img,
                        bx,
                        ry0 + rng.uniform(0, 6),
                        bx + bw,
                        ry1,
                        random_colour(rng, s=(0.3, 0.8), v=(0.4, 0.9)),
                        ln,
                        1,
                    )
                    bx += bw + 1
        elif kind == 3:  # table / desk in front of the wall
            top = hz + (h - hz) * rng.uniform(0.05, 0.25)
            col = hsv(0.08 + rng.uniform(-0.03, 0.03), 0.45, float(rng.uniform(0.45, 0.7)))
            for lx in (x + 8, x + ow - 18):
                _box(img, lx, top, lx + 10, top + (h - hz) * 0.35, shade(col, 0.35), ln, lw)
            _shape(img, [[x - 10, top], [x + ow + 10, top], [x + ow, top - 18], [x, top - 18]], col, ln, lw)
            _box(img, x - 10, top, x + ow + 10, top + 10, shade(col, 0.3), ln, lw)
        else:  # poster / picture frame
            y0 = hz * rng.uniform(0.15, 0.35)
            ph = hz * rng.uniform(0.15, 0.3)
            _box(img, x, y0, x + ow * 0.7, y0 + ph, random_colour(rng, s=(0.3, 0.8), v=(0.5, 0.95)), ln, lw)
            cv2.circle(
                img,
                (int(x + ow * 0.35), int(y0 + ph / 2)),
                int(ph * 0.25),
                random_colour(rng, s=(0.2, 0.8), v=(0.6, 1.0)),
                -1,
                cv2.LINE_AA,
            )
        x += ow + float(rng.uniform(0.04, 0.15)) * w


def _paint_outdoor(img: np.ndarray, d: SetDesign, rng: np.random.Generator) -> None:
    h, w, hz, lw, ln = d.height, d.width, d.horizon, d.line_px, d.line
    evening = rng.random() < 0.25
    if evening:
        _vgrad(img, 0, hz, hsv(0.72, 0.5, 0.45), hsv(0.06, 0.6, 0.98))
    else:
        _vgrad(img, 0, hz, hsv(0.6, float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.75, 0.95))), hsv(0.55, 0.15, 1.0))
    # clouds: clusters of ellipses, shaded underneath, no outline (painted style)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.45) * hz
        s = float(rng.uniform(25, 70))
        base = (255, 240, 230) if evening else (250, 252, 255)
        puffs = [
            (rng.normal(0, s * 0.9), rng.normal(0, s * 0.25), s * rng.uniform(0.7, 1.3), s * rng.uniform(0.4, 0.7))
            for _ in range(5)
        ]
        for colour, dy in ((shade(base, 0.18), s * 0.18), (base, 0.0)):  # shaded underside, then the lit body
            for ox, oy, ax, ay in puffs:
                cv2.ellipse(
                    img, (int(cx + ox), int(cy + oy + dy)), (int(ax), int(ay)), 0, 0, 360, colour, -1, cv2.LINE_AA
                )
    # hill layers, far to near, darker and more saturated toward the viewer
    hue = d.base_hue * 0.3 + 0.22  # greens .. teals
    for layer in range(3):
        y_base = hz - (2 - layer) * hz * 0.12
        xs = np.linspace(-10, w + 10, 48)
        ph = rng.uniform(0, 2 * math.pi, 3)
        amp = hz * (0.05 + 0.04 * layer)
        ys = y_base - amp * (1 + np.sin(xs / w * 5 + ph[0]) * 0.6 + np.sin(xs / w * 11 + ph[1]) * 0.3)
        pts = np.concatenate([np.stack([xs, ys], 1), [[w + 10, h + 10], [-10, h + 10]]])
        col = hsv(hue + 0.02 * layer, d.saturation + 0.15 * layer, 0.75 - 0.12 * layer)
        _shape(img, pts, col, ln, lw)
    # ground
    ground = hsv(hue + 0.03, d.saturation + 0.3, 0.6)
    _shape(img, [[-10, hz], [w + 10, hz], [w + 10, h + 10], [-10, h + 10]], ground, ln, lw)
    _vgrad(img, hz + lw, h, ground, lighten(ground, 0.1))
    # path
    px = w * rng.uniform(0.2, 0.8)
    _shape(
        img,
        [[px - w * 0.05, hz], [px + w * 0.05, hz], [px + w * 0.35, h + 5], [px - w * 0.35, h + 5]],
        hsv(0.1, 0.25, 0.8),
        ln,
        lw,
    )
    # props along the horizon: trees, houses, utility poles
    x = float(rng.uniform(0, 0.1)) * w
    while x < w:
        kind = int(rng.integers(3))
        if kind == 0:  # tree
            th = float(rng.uniform(0.25, 0.45)) * hz
            trunk = hsv(0.07, 0.5, 0.35)
            _box(img, x - 6, hz - th * 0.45, x + 6, hz + 6, trunk, ln, lw, shadow_side=1.0)
            leaf = hsv(hue + rng.uniform(-0.03, 0.03), 0.55, float(rng.uniform(0.35, 0.6)))
            for _ in range(4):
                r = int(th * rng.uniform(0.22, 0.32))
                cx, cy = int(x + rng.normal(0, th * 0.15)), int(hz - th * 0.55 - rng.uniform(0, th * 0.35))
                cv2.circle(img, (cx, cy), r + lw, ln, -1, cv2.LINE_AA)
                cv2.circle(img, (cx, cy), r, leaf, -1, cv2.LINE_AA)
                cv2.circle(img, (cx + r // 3, cy + r // 3), int(r * 0.7), shade(leaf, 0.3), -1, cv2.LINE_AA)
        elif kind == 1:  # house
            bw, bh = float(rng.uniform(0.08, 0.16)) * w, float(rng.uniform(0.15, 0.3)) * hz
            col = hsv(float(rng.random()), 0.25, float(rng.uniform(0.7, 0.95)))
            _box(img, x, hz - bh, x + bw, hz + 4, col, ln, lw, shadow_side=1.0)
            roof = hsv(float(rng.random()), 0.5, 0.5)
            _shape(img, [[x - 8, hz - bh], [x + bw + 8, hz - bh], [x + bw * 0.5, hz - bh - bh * 0.5]], roof, ln, lw)
            for wx in np.arange(x + bw * 0.15, x + bw * 0.8, bw * 0.3):
                _box(img, wx, hz - bh * 0.75, wx + bw * 0.15, hz - bh * 0.45, hsv(0.58, 0.3, 0.9), ln, max(1, lw - 1))
        else:  # utility pole with wires
            ph_ = float(rng.uniform(0.6, 0.85)) * hz
            _box(img, x - 5, hz - ph_, x + 5, hz + 4, hsv(0.08, 0.2, 0.5), ln, lw, shadow_side=1.0)
            _box(img, x - 30, hz - ph_ * 0.92, x + 30, hz - ph_ * 0.88, hsv(0.08, 0.2, 0.45), ln, 1)
            for k in (-1, 1):
                x2 = x + k * w * 0.4
                pts = np.array([[x + k * 28, hz - ph_ * 0.9], [(x + x2) / 2, hz - ph_ * 0.8], [x2, hz - ph_ * 0.9]])
                cv2.polylines(img, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, ln, 1, cv2.LINE_AA)
        x += float(rng.uniform(0.08, 0.3)) * w


def _paint_abstract(img: np.ndarray, d: SetDesign, rng: np.random.Generator) -> None:
    """Close-up / emotional backdrops: gradient plus speed lines, stripes or bokeh."""
    h, w = d.height, d.width
    c0 = hsv(d.base_hue, d.saturation + 0.2, float(rng.uniform(0.55, 0.95)))
    c1 = hsv(d.base_hue + float(rng.uniform(-0.15, 0.15)), d.saturation, float(rng.uniform(0.3, 0.9)))
    _vgrad(img, 0, h, c0, c1)
    kind = int(rng.integers(3))
    if kind == 0:  # radial speed lines
        cx, cy = w / 2 + rng.normal(0, w * 0.1), h / 2 + rng.normal(0, h * 0.1)
        for a in np.sort(rng.uniform(0, 2 * math.pi, 90)):
            r0 = float(rng.uniform(0.25, 0.45)) * h
            p0 = (int(cx + r0 * math.cos(a)), int(cy + r0 * math.sin(a)))
            p1 = (int(cx + 2 * w * math.cos(a)), int(cy + 2 * w * math.sin(a)))
            cv2.line(img, p0, p1, lighten(c0, 0.6), int(rng.integers(1, 4)), cv2.LINE_AA)
    elif kind == 1:  # diagonal stripes
        step = int(rng.integers(30, 70))
        for x in range(-h, w + h, step):
            pts = np.array([[x, 0], [x + step // 2, 0], [x + step // 2 - h, h], [x - h, h]], np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(img, [pts], lighten(c1, 0.12), cv2.LINE_AA)
    else:  # bokeh circles
        for _ in range(40):
            r = int(rng.uniform(8, 45))
            cv2.circle(
                img,
                (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                r,
                lighten(c0, float(rng.uniform(0.15, 0.45))),
                -1,
                cv2.LINE_AA,
            )


# --------------------------------------------------------------------------- camera


def camera_matrix(
    center: tuple[float, float], zoom: float, shake: tuple[float, float], frame_size: tuple[int, int]
) -> np.ndarray:
    """2x3 float64 affine mapping set pixels to frame pixels for ``cv2.warpAffine``.

    The frame centre shows set point ``center + shake``; ``zoom`` frame pixels per set pixel.
    """
    if zoom <= 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    w, h = frame_size
    cx, cy = center[0] + shake[0], center[1] + shake[1]
    return np.array([[zoom, 0.0, w / 2.0 - zoom * cx], [0.0, zoom, h / 2.0 - zoom * cy]], dtype=np.float64)


def view_rect(
    center: tuple[float, float], zoom: float, frame_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the set region the camera shows (without shake)."""
    w, h = frame_size
    return (
        center[0] - w / (2 * zoom),
        center[1] - h / (2 * zoom),
        center[0] + w / (2 * zoom),
        center[1] + h / (2 * zoom),
    )
