"""Training data for the character detector: a YOLO-seg dataset built from a seed.

Real labelled anime cannot be downloaded, so the detector learns from pictures
whose masks are known by construction, in the spirit of Anime-seg-yolov8
(../shared/seeds/004): transparent characters pasted onto backgrounds. Three kinds
of image, 640x360 JPEG (quality 90), in the proportions of :data:`MIX`:

- ``one``: one-to-one pastes, one large character on a background: a full figure, a
  knee-up figure whose legs leave the frame, or a close-up bust cut by the frame
  border;
- ``multi``: 2-4 characters of mixed sizes, scaled, rotated, flipped, overlapping
  each other and cut by the frame border, then noise / blur / colour jitter;
- ``episode``: frames of generated episodes (:func:`celmask.tasks.synth.render_frames`),
  the product's own domain: camera moves, subtitles, wide shots, empty shots. Held
  duplicates, flash frames and transition blends are skipped.

Foregrounds are generated characters (:mod:`celmask.tasks.synth.characters`, a fresh
random style per character, so palettes, proportions and line weights vary) and,
when a directory of real RGBA cut-outs is given (:mod:`celmask.tasks.trainset.realart`), those
cut-outs (alpha = the exact mask) for :data:`REAL_ART_SHARE` of the pasted
foregrounds, sources balanced, scaled from full figure to a head-and-chest close-up,
rotated, flipped and colour-jittered. Backgrounds are real sets when given (for
:data:`REAL_ART_SHARE` of the pictures, with ``empty`` pictures of a set alone as
hard negatives), else crops and zooms of generated painted sets
(:mod:`celmask.tasks.synth.backgrounds`), sometimes a plain colour or a gradient. Real art
is split by character and by set: train, val and test never share one.

Every paste writes an occlusion-exact label map (back to front, the front-most
character owns a pixel), so an instance's label is what is *visible* of it. Each
visible instance becomes one YOLO-seg line, class 0 ``character``; an instance cut
into several pieces (an arm in front of it) is still one line: its outlines and its
holes are joined into one polygon by ultralytics' ``merge_multi_segment`` (zero-width
bridges, traced there and back), which rasterises back to the same pixels because
``cv2.fillPoly`` — what ultralytics rasterises labels with — fills by the even-odd
rule. Instances under :data:`MIN_INSTANCE_FRACTION` of the image are dropped.

Layout of ``build_dataset(root, ...)``::

    root/images/{train,val,test}/*.jpg    root/labels/{train,val,test}/*.txt
    root/{train,val,test}.jsonl           one line per image: kind, sources, instances
    root/dataset.json                     parameters, split seeds, episode seeds, cut-outs
    root/data.yaml                        absolute paths; written last (the dataset is complete)

Splits never share a seed: image ``i`` of kind ``k`` in a split draws from
``child_rng(split_seed, k, i)`` and its episodes have seeds ``split_seed + j``,
with ``split_seed = SPLIT_SEED_BASE[split] + 1000 * seed``. The bases are 1e8 apart,
so no training split ever uses an episode seed below 100 000 000 — the range where
tests, demos and benchmarks pick theirs. ``test`` holds only episode frames: the
held-out set the trained detector is judged on. Images are produced and written
one at a time (never all in memory); same arguments give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth.backgrounds import (
    SET_KINDS,
    camera_matrix,
    paint_set,
    random_set,
)
from celmask.tasks.synth.characters import (
    Pose,
    gesture_poses,
    head_center,
    random_base_pose,
    random_design,
    random_expression,
    random_style,
    standing_height,
    walk_cycle,
)
from celmask.tasks.synth.render import render_frames
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.sprites import draw_character
from celmask.tasks.synth.timeline import layers_at, plan_timeline
from celmask.tasks.trainset.realart import (
    SPLIT_SHARES,
    Background,
    Cutout,
    by_pose,
    by_split,
    load_backgrounds,
    load_cutouts,
)

IMAGE_SIZE = (640, 360)
"""(width, height) of every image: the product's working resolution."""
JPEG_QUALITY = 90
MIX = {"one": 0.40, "multi": 0.35, "empty": 0.0, "episode": 0.25}
"""Share of each kind of image in the train and val splits without real backgrounds."""
KINDS = tuple(MIX)
SPLITS = ("train", "val", "test")
SPLIT_BY = ("character", "pose")
"""How real cut-outs are split: by character (does it find characters it never saw?) or
by pose (a studio's own cast: does it find its characters in poses it never saw?)."""
SPLIT_SEED_BASE = {"train": 100_000_000, "val": 200_000_000, "test": 300_000_000}
MAX_SEED = 99_999
"""``seed`` may be 0..MAX_SEED, so the splits of all seeds stay in disjoint ranges."""
MAX_EPISODES_PER_SPLIT = 1000
MIN_INSTANCE_FRACTION = 0.001
"""Instances with fewer visible pixels than this share of the image get no label."""
EPISODE_SECONDS = 30.0
EPISODE_FPS = Fraction(24000, 1001)
FRAMES_PER_EPISODE = 10
"""Frames sampled per generated episode: one or two per shot (:func:`_wanted_frames`)."""
EMPTY_FRAME_KEEP = 0.3
"""Share of sampled episode frames without characters kept as negatives."""
CLASS_NAMES = ("character",)
SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_CUTOUTS = SHARED / "realart" / "cutouts"
DEFAULT_BACKGROUNDS = SHARED / "realart" / "backgrounds"
"""Where the real cut-outs and backgrounds live beside a checkout (absent on some machines)."""
REAL_ART_SHARE = 0.65
"""With real art, the share of pasted foregrounds that are real cut-outs and of
backgrounds that are real sets (the rest stays generated: the product's own domain)."""
REAL_MIX = {"one": 0.33, "multi": 0.32, "empty": 0.07, "episode": 0.28}
"""The mix of the train and val splits when real backgrounds are given: ``empty`` is
a real background with no character, a hard negative (walls and signs are not characters)."""
TEST_REAL_MIX = {"one": 0.4, "multi": 0.35, "empty": 0.0, "episode": 0.25}
"""The test split with real art: composites of held-out characters on held-out sets,
every foreground real, beside frames of held-out generated episodes."""
POLYGON_EPSILON = 0.7
"""Douglas-Peucker tolerance (pixels) when outlining masks."""
MIN_PART_PIXELS = 6
"""Pieces and holes of a visible mask smaller than this are ignored when outlining."""


# --------------------------------------------------------------------------- cut-outs


def resolve_art(value: str | Path | None, default: Path) -> Path | None:
    """The real-art directory to use: ``None`` -> ``default`` when it exists, else none;
    ``"none"`` or ``""`` -> none; a path -> that directory, which must exist (its files
    are checked when loaded, :mod:`celmask.tasks.trainset.realart`)."""
    if value is None:
        return default if default.is_dir() else None
    if str(value).strip().lower() in ("", "none"):
        return None
    path = Path(value)
    if not path.is_dir():
        raise CelmaskError(
            path, "directory not found", "give a directory of real art (see tasks/trainset/realart.py), or 'none'"
        )
    return path


# --------------------------------------------------------------------------- pictures


@dataclass
class Composite:
    """One training picture. rgb: (H, W, 3) uint8; labels: (H, W) uint8 instance map
    (0 = background, k = the k-th pasted character); info: how it was made (JSON-able)."""

    rgb: np.ndarray
    labels: np.ndarray
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Art:
    """The real drawings one split may use: cut-outs and backgrounds (either may be empty)."""

    cutouts: tuple[Cutout, ...] = ()
    backgrounds: tuple[Background, ...] = ()
    real_share: float = REAL_ART_SHARE

    def pick_cutout(self, rng: np.random.Generator) -> Cutout:
        """A cut-out, sources balanced: a source drawn with weight sqrt(its cut-outs), so
        one title with hundreds of poses does not drown the rest, then a file of it."""
        sources = sorted({c.source for c in self.cutouts})
        counts = np.array([sum(c.source == s for c in self.cutouts) for s in sources], np.float64)
        w = np.sqrt(counts)
        source = sources[int(rng.choice(len(sources), p=w / w.sum()))]
        files = [c for c in self.cutouts if c.source == source]
        return files[int(rng.integers(len(files)))]


NO_ART = Art()


@dataclass(frozen=True)
class _Foreground:
    """A premultiplied RGBA picture and the point (x, y) that gets placed."""

    rgb: np.ndarray
    alpha: np.ndarray
    pivot: tuple[float, float]


def _place(
    canvas: np.ndarray,
    labels: np.ndarray,
    fg: _Foreground,
    at: tuple[float, float],
    label: int,
    *,
    angle: float = 0.0,
    scale: float = 1.0,
    flip: bool = False,
) -> None:
    """Composite ``fg`` over ``canvas`` in place: its pivot lands on ``at``, rotated by
    ``angle`` degrees (counter-clockwise on screen), scaled, mirrored; ``labels`` takes
    ``label`` where the warped alpha is >= 128 (the mask convention of the sprites)."""
    H, W = labels.shape
    c, s = math.cos(math.radians(angle)) * scale, math.sin(math.radians(angle)) * scale
    fx = -1.0 if flip else 1.0
    px, py = fg.pivot
    # canvas = at + R S F (p - pivot); R rotates counter-clockwise on a y-down screen.
    a = np.array([[c * fx, s], [-s * fx, c]])
    m = np.hstack([a, (np.array(at) - a @ np.array([px, py]))[:, None]])
    if angle == 0.0 and scale == 1.0 and not flip and float(m[0, 2]).is_integer() and float(m[1, 2]).is_integer():
        flags = cv2.INTER_NEAREST  # a pure whole-pixel shift: exact
    else:
        flags = cv2.INTER_LINEAR
    rgb = cv2.warpAffine(fg.rgb, m, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = cv2.warpAffine(fg.alpha, m, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.nonzero(alpha)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a_roi = alpha[y0:y1, x0:x1]
    dst = canvas[y0:y1, x0:x1]
    inv = cv2.merge([255 - a_roi] * 3)
    dst[...] = cv2.add(cv2.multiply(dst, inv, scale=1.0 / 255.0), rgb[y0:y1, x0:x1])
    labels[y0:y1, x0:x1][a_roi >= 128] = label


def _real_background(rng: np.random.Generator, bg: Background, size: tuple[int, int]) -> np.ndarray:
    """A view of a real set: a random crop of 55-100% of its width at the frame's aspect
    ratio, resized to the frame, sometimes mirrored and colour-jittered."""
    W, H = size
    h0, w0 = bg.rgb.shape[:2]
    cw = min(w0, h0 * W / H) * float(rng.uniform(0.55, 1.0))
    ch = cw * H / W
    x0 = float(rng.uniform(0, w0 - cw))
    y0 = float(rng.uniform(0, h0 - ch))
    crop = bg.rgb[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
    rgb = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if cw > W else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        rgb = np.ascontiguousarray(rgb[:, ::-1])
    return _jitter_colours(rng, rgb) if rng.random() < 0.4 else rgb


def _background(rng: np.random.Generator, size: tuple[int, int], art: Art = NO_ART) -> tuple[np.ndarray, str]:
    """A real set when there are any (:attr:`Art.real_share` of the time), else a
    generated painted-set view (crop + zoom), or a plain colour, or a gradient."""
    W, H = size
    if art.backgrounds and rng.random() < art.real_share:
        bg = art.backgrounds[int(rng.integers(len(art.backgrounds)))]
        return _real_background(rng, bg, size), f"background:{bg.source}/{bg.name}"
    r = rng.random()
    if r < 0.75:
        kind = SET_KINDS[int(rng.choice(len(SET_KINDS), p=[0.4, 0.4, 0.2]))]
        sw, sh = int(W * rng.uniform(1.05, 2.0)), int(H * rng.uniform(1.05, 1.6))
        design = random_set(rng, set_id=0, width=sw, height=sh, kind=kind)
        painted = paint_set(design)
        zoom = float(rng.uniform(1.0, 1.7))
        vw, vh = W / (2 * zoom), H / (2 * zoom)
        cx = float(rng.uniform(vw, max(vw, sw - vw)))
        cy = float(rng.uniform(vh, max(vh, sh - vh)))
        rgb = cv2.warpAffine(
            painted,
            camera_matrix((cx, cy), zoom, (0.0, 0.0), size),
            size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if rng.random() < 0.5:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        return rgb, f"set:{kind}"
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    if r < 0.85:
        rgb = np.empty((H, W, 3), np.float32)
        rgb[...] = c0
        name = "plain"
    else:
        c1 = rng.integers(0, 256, 3).astype(np.float32)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        if rng.random() < 0.7:
            th = rng.uniform(0, 2 * math.pi)
            t = (xx - W / 2) * math.cos(th) + (yy - H / 2) * math.sin(th)
            t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        else:
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            t = np.hypot(xx - cx, yy - cy)
            t = t / max(1e-6, float(t.max()))
        rgb = (1 - t)[..., None] * c0 + t[..., None] * c1
        name = "gradient"
    rgb += rng.normal(0.0, rng.uniform(0.0, 4.0), (H, W, 1)).astype(np.float32)
    return np.clip(rgb, 0, 255).round().astype(np.uint8), name


def _pose(rng: np.random.Generator, framing: str) -> Pose:
    base = random_base_pose(rng)
    if framing == "closeup":  # as the episodes stage busts: arms down, the face does the acting
        base = Pose(head_tilt=base.head_tilt, turn=base.turn * 0.6, gaze=base.gaze, brows=base.brows)
        return random_expression(rng, base) if rng.random() < 0.8 else base
    r = rng.random()
    if r < 0.25:
        return gesture_poses(rng, base)[int(rng.integers(3))]
    if r < 0.45:
        return walk_cycle(base, 1.0 if rng.random() < 0.5 else -1.0)[int(rng.integers(4))]
    if r < 0.75:
        return random_expression(rng, base)
    return base


@dataclass(frozen=True)
class _Placement:
    fg: _Foreground
    at: tuple[float, float]
    angle: float
    scale: float
    flip: bool
    source: str


FRAMINGS = ("small", "full", "medium", "closeup")


def _generated(
    rng: np.random.Generator, framing: str, size: tuple[int, int], x_frac: float | None = None
) -> _Placement:
    """A generated character of a random design and style, framed in the picture.

    small / full: the whole figure, 18-45% / 50-95% of the frame height; medium: a
    knee-up figure whose legs leave the frame; closeup: a bust whose head fills 22-45%
    of the frame height. Parts far below the frame are not drawn.
    """
    W, H = size
    design = random_design(rng, 0, random_style(rng))
    pose = _pose(rng, framing)
    hgt = standing_height(design)
    x = W * (float(rng.uniform(0.12, 0.88)) if x_frac is None else x_frac)
    hc = head_center(design)
    if framing == "closeup":
        ppu = H * float(rng.uniform(0.22, 0.45)) / design.head_h
        head = (x, H * float(rng.uniform(0.25, 0.55)))
        anchor = (head[0] - hc[0] * ppu, head[1] - hc[1] * ppu)
        pivot_units = hc
    else:
        if framing == "small":
            h_px = H * float(rng.uniform(0.18, 0.45))
            feet = H * float(rng.uniform(0.55, 0.98))
        elif framing == "full":
            h_px = H * float(rng.uniform(0.5, 0.95))
            feet = H * float(rng.uniform(0.8, 1.04))
        else:
            h_px = H * float(rng.uniform(1.3, 2.0))
            feet = H * float(rng.uniform(0.05, 0.2)) + h_px
        ppu = h_px / hgt
        anchor = (x, feet)
        pivot_units = (0.0, 0.0)
    # Nothing more than a fifth of the frame below its bottom edge is drawn (rotation margin).
    crop = (H * 1.2 - anchor[1]) / ppu
    sprite = draw_character(design, pose, ppu, crop_bottom=crop if crop < 0.0 else None)
    pivot = (sprite.anchor[0] + pivot_units[0] * ppu, sprite.anchor[1] + pivot_units[1] * ppu)
    at = (anchor[0] + pivot_units[0] * ppu, anchor[1] + pivot_units[1] * ppu)
    angle = float(rng.normal(0.0, 6.0)) if rng.random() < 0.5 else 0.0
    return _Placement(
        _Foreground(sprite.rgb, sprite.alpha, pivot), at, angle, 1.0, bool(rng.random() < 0.5), f"generated:{framing}"
    )


def _jitter_colours(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Hue shift, saturation and brightness scaling of straight RGB uint8."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-20, 20)) % 256
    hsv[..., 1] *= rng.uniform(0.7, 1.3)
    hsv[..., 2] *= rng.uniform(0.8, 1.15)
    return cv2.cvtColor(np.clip(hsv, 0, 255).round().astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


def _real(
    rng: np.random.Generator, cutout: Cutout, framing: str, size: tuple[int, int], x_frac: float | None = None
) -> _Placement:
    """A real cut-out (cut flat at the bottom), colour-jittered, scaled, rotated.

    Its height is a share of the frame's by framing, up to 2.6 frames for a close-up
    where only the head and chest show (its top then stays near the frame's top).
    Mostly its bottom edge sits on or below the frame's bottom edge, as sprites appear on
    screen; sometimes it floats inside the picture, as in Anime-seg's pastes.
    """
    W, H = size
    rgba = cutout.rgba
    h0 = rgba.shape[0]
    target = {"small": (0.25, 0.5), "full": (0.5, 0.95), "medium": (0.8, 1.4), "closeup": (1.3, 2.6)}[framing]
    k = H * float(rng.uniform(*target)) / h0
    rgb = _jitter_colours(rng, np.ascontiguousarray(rgba[..., :3])) if rng.random() < 0.7 else rgba[..., :3]
    alpha = rgba[..., 3]
    nw, nh = max(1, round(rgba.shape[1] * k)), max(1, round(h0 * k))
    interp = cv2.INTER_AREA if k < 1.0 else cv2.INTER_LINEAR
    rgb = cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)
    alpha = cv2.resize(alpha, (nw, nh), interpolation=interp)
    premult = cv2.multiply(rgb, cv2.merge([alpha] * 3), scale=1.0 / 255.0)
    pivot = (nw / 2.0, float(nh))  # bottom centre
    x = W * (float(rng.uniform(0.12, 0.88)) if x_frac is None else x_frac)
    if nh > 1.3 * H:  # a close-up: the top of the head near the top of the frame
        y = nh + H * float(rng.uniform(-0.15, 0.12))
    elif rng.random() < 0.75:
        y = H * float(rng.uniform(1.0, 1.0 + 0.25 * min(1.0, nh / H)))
    else:
        y = float(rng.uniform(min(H, nh), max(min(H, nh), H * 0.98)))
    angle = float(rng.normal(0.0, 8.0)) if rng.random() < 0.6 else 0.0
    return _Placement(
        _Foreground(premult, alpha, pivot),
        (x, y),
        angle,
        1.0,
        bool(rng.random() < 0.5),
        f"cutout:{cutout.source}/{cutout.name}",
    )


def _foreground(
    rng: np.random.Generator, framing: str, size: tuple[int, int], art: Art, x_frac: float | None = None
) -> _Placement:
    if art.cutouts and rng.random() < art.real_share:
        return _real(rng, art.pick_cutout(rng), framing, size, x_frac)
    return _generated(rng, framing, size, x_frac)


def _degrade(rng: np.random.Generator, rgb: np.ndarray, strength: float) -> tuple[np.ndarray, list[str]]:
    """Whole-picture augmentation: colour jitter, blur (gaussian or motion), noise."""
    done = []
    if rng.random() < 0.3 * strength:
        rgb = _jitter_colours(rng, rgb)
        done.append("colour")
    if rng.random() < 0.25 * strength:
        alpha, beta = float(rng.uniform(0.75, 1.2)), float(rng.uniform(-25, 25))
        rgb = cv2.convertScaleAbs(rgb, alpha=alpha, beta=beta)
        done.append("contrast")
    r = rng.random()
    if r < 0.15 * strength:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.6, 1.6)))
        done.append("blur")
    elif r < 0.25 * strength:
        n = int(rng.integers(5, 13))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2, :] = 1.0 / n
        rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        rgb = cv2.filter2D(rgb, -1, kernel / max(1e-6, float(kernel.sum())))
        done.append("motion-blur")
    if rng.random() < 0.35 * strength:
        sigma = float(rng.uniform(2.0, 9.0))
        noise = rng.normal(0.0, sigma, rgb.shape[:2] + ((1,) if rng.random() < 0.5 else (3,))).astype(np.float32)
        rgb = np.clip(rgb.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)
        done.append("noise")
    if rng.random() < 0.25 * strength:
        ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 60))])
        rgb = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        done.append("jpeg")
    return rgb, done


def compose_one(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE, art: Art = NO_ART) -> Composite:
    """One large character on a background (full figure 40%, knee-up 30%, close-up bust 30%)."""
    W, H = size
    canvas, bg = _background(rng, size, art)
    labels = np.zeros((H, W), np.uint8)
    framing = ("full", "medium", "closeup")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    p = _foreground(rng, framing, size, art)
    _place(canvas, labels, p.fg, p.at, 1, angle=p.angle, scale=p.scale, flip=p.flip)
    canvas, aug = _degrade(rng, canvas, 0.5)
    return Composite(canvas, labels, {"kind": "one", "background": bg, "foregrounds": [p.source], "augment": aug})


def compose_empty(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE, art: Art = NO_ART) -> Composite:
    """A background and nothing on it: a hard negative (real sets when there are any)."""
    W, H = size
    canvas, bg = _background(rng, size, Art((), art.backgrounds, 0.9 if art.backgrounds else 0.0))
    canvas, aug = _degrade(rng, canvas, 0.5)
    return Composite(
        canvas, np.zeros((H, W), np.uint8), {"kind": "empty", "background": bg, "foregrounds": [], "augment": aug}
    )


def compose_multi(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE, art: Art = NO_ART) -> Composite:
    """2-4 characters that overlap and leave the frame, then whole-picture augmentation.

    Half the pictures stage one framing for everybody (a wide / full / knee-up group
    shot), the rest mix sizes, close-ups included. Placed back to front; half the time
    they crowd around one spot, so they occlude each other.
    """
    W, H = size
    canvas, bg = _background(rng, size, art)
    labels = np.zeros((H, W), np.uint8)
    n = int(rng.integers(2, 5))
    if rng.random() < 0.5:
        shared = FRAMINGS[int(rng.choice(3, p=[0.35, 0.45, 0.2]))]
        framings = [shared] * n
    else:
        framings = [FRAMINGS[int(rng.choice(4, p=[0.3, 0.35, 0.2, 0.15]))] for _ in range(n)]
    if rng.random() < 0.5:  # crowd: overlapping
        centre = rng.uniform(0.25, 0.75)
        xs = np.clip(centre + rng.normal(0.0, 0.14, n), -0.05, 1.05)
    else:
        xs = rng.uniform(-0.05, 1.05, n)
    order = np.argsort([{"closeup": 3, "medium": 2, "full": 1, "small": 0}[f] + rng.uniform(0, 1.5) for f in framings])
    sources = []
    for label, k in enumerate(order, start=1):  # back to front: bigger framings tend to be in front
        p = _foreground(rng, framings[k], size, art, float(xs[k]))
        _place(canvas, labels, p.fg, p.at, label, angle=p.angle, scale=p.scale, flip=p.flip)
        sources.append(p.source)
    canvas, aug = _degrade(rng, canvas, 1.0)
    return Composite(canvas, labels, {"kind": "multi", "background": bg, "foregrounds": sources, "augment": aug})


def _wanted_frames(rng: np.random.Generator, plan, n: int) -> set[int]:
    """About ``n`` frames of an episode, spread over its shots: shots in random order,
    one random frame each, two (one per half) from shots longer than 4 s."""
    wanted: set[int] = set()
    for j in rng.permutation(len(plan.shots)):
        if len(wanted) >= n:
            break
        s = plan.shots[int(j)]
        if s.end - s.start > 4 * float(plan.fps) and len(wanted) + 1 < n:
            mid = (s.start + s.end) // 2
            wanted.update((int(rng.integers(s.start, mid)), int(rng.integers(mid, s.end))))
        else:
            wanted.add(int(rng.integers(s.start, s.end)))
    return wanted


def episode_frames(first_seed: int, count: int, size: tuple[int, int] = IMAGE_SIZE) -> Iterator[Composite]:
    """``count`` frames sampled from generated episodes with seeds ``first_seed``, +1, ...

    Per :data:`EPISODE_SECONDS` episode about :data:`FRAMES_PER_EPISODE` frames are
    wanted, one or two per shot; a wanted frame that holds the previous drawing, is a flash
    or part of a fade / dissolve is replaced by the next frame of its shot that is none
    of these. Frames without characters are kept for :data:`EMPTY_FRAME_KEEP` of them.
    """
    W, H = size
    made = 0
    for j in range(MAX_EPISODES_PER_SPLIT):
        if made >= count:
            return
        seed = first_seed + j
        n_frames = round(Fraction(EPISODE_SECONDS) * EPISODE_FPS)
        plan = plan_timeline(seed, frame_count=n_frames, width=W, height=H, fps=EPISODE_FPS)
        rng = child_rng(seed, "detector-frames")
        wanted = _wanted_frames(rng, plan, FRAMES_PER_EPISODE)
        last = max(wanted)
        pending: int | None = None  # shot of a wanted frame not yet taken
        for fr in render_frames(plan):
            if fr.index > last and pending is None:
                break
            if pending is not None and pending != fr.shot:
                pending = None  # its shot ended without a usable frame
            if fr.index in wanted:
                pending = fr.shot
            if pending is None:
                continue
            layers = layers_at(plan, fr.index)
            if fr.same_as_previous or fr.labels is None or len(layers) != 1 or layers[0][1] < 1.0:
                continue
            pending = None
            if not fr.labels.any() and rng.random() >= EMPTY_FRAME_KEEP:
                continue
            yield Composite(
                fr.rgb.copy(),
                fr.labels.copy(),
                {
                    "kind": "episode",
                    "episode_seed": seed,
                    "frame": fr.index,
                    "shot": fr.shot,
                    "shot_kind": plan.shots[fr.shot].kind,
                },
            )
            made += 1
            if made >= count:
                return
    raise CelmaskError(
        "episode frames",
        f"{MAX_EPISODES_PER_SPLIT} episodes gave only {made} of {count} frames",
        "ask for fewer images",
    )


# --------------------------------------------------------------------------- labels


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One polygon ((N, 2) float pixel coordinates) outlining ``mask``, or None.

    Every outer outline and hole (``RETR_CCOMP``) is simplified (Douglas-Peucker,
    :data:`POLYGON_EPSILON` px); several are chained nearest-first and joined into one
    by ultralytics' ``merge_multi_segment``. ``cv2.fillPoly`` of the result gives back the mask.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    parts = []
    for c in contours:
        if len(c) < 3 or cv2.contourArea(c) + 0.5 * cv2.arcLength(c, True) < MIN_PART_PIXELS:
            continue  # a speck of a few pixels (the area of an outline misses its boundary half-pixels)
        approx = cv2.approxPolyDP(c, POLYGON_EPSILON, True).reshape(-1, 2)
        if len(approx) >= 3:
            parts.append(approx.astype(np.float64))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    parts = _chain_order(parts)
    from celmask.models.ultralytics_env import ultralytics_offline

    ultralytics_offline()
    from ultralytics.data.converter import merge_multi_segment

    return np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in parts]), axis=0)


def _chain_order(parts: list[np.ndarray]) -> list[np.ndarray]:
    """``parts`` reordered into a short chain (greedy nearest neighbour from the largest):
    every bridge ``merge_multi_segment`` draws between consecutive parts rasterises as a
    thin line of extra pixels, so the bridges should be short."""
    left = list(range(len(parts)))
    first = max(left, key=lambda i: abs(cv2.contourArea(parts[i].astype(np.float32))))
    chain = [first]
    left.remove(first)
    while left:
        tail = parts[chain[-1]]
        dist = [float(np.min(((tail[:, None, :] - parts[i][None, :, :]) ** 2).sum(-1))) for i in left]
        chain.append(left.pop(int(np.argmin(dist))))
    return [parts[i] for i in chain]


def instance_polygons(labels: np.ndarray, min_pixels: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(label, polygon) of every instance in a label map with at least ``min_pixels``
    visible pixels (default :data:`MIN_INSTANCE_FRACTION` of the image)."""
    if min_pixels is None:
        min_pixels = math.ceil(MIN_INSTANCE_FRACTION * labels.size)
    counts = np.bincount(labels.ravel(), minlength=256)
    out = []
    for k in np.nonzero(counts)[0]:
        if k == 0 or counts[k] < min_pixels:
            continue
        poly = mask_polygon(labels == k)
        if poly is not None:
            out.append((int(k), poly))
    return out


def yolo_lines(polygons: list[np.ndarray], size: tuple[int, int], cls: int = 0) -> list[str]:
    """YOLO-seg label lines: ``cls x1 y1 x2 y2 ...`` normalised to the image size."""
    W, H = size
    lines = []
    for poly in polygons:
        xy = np.clip(np.asarray(poly, np.float64) / np.array([W, H]), 0.0, 1.0)
        lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
    return lines


def read_yolo_masks(label_file: str | Path, size: tuple[int, int]) -> list[np.ndarray]:
    """The masks a YOLO-seg label file describes, rasterised as ultralytics does (fillPoly)."""
    W, H = size
    masks = []
    for line in Path(label_file).read_text().splitlines():
        vals = np.array(line.split()[1:], np.float64).reshape(-1, 2) * np.array([W, H])
        m = np.zeros((H, W), np.uint8)
        cv2.fillPoly(m, [np.round(vals).astype(np.int32).reshape(-1, 1, 2)], 1)
        masks.append(m.astype(bool))
    return masks


# --------------------------------------------------------------------------- writing


def split_seed(split: str, seed: int) -> int:
    """The seed all of a split's pictures derive from (see the module docstring)."""
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= seed <= MAX_SEED:
        raise CelmaskError("seed", f"must be 0..{MAX_SEED}, got {seed}")
    return SPLIT_SEED_BASE[split] + 1000 * seed


def split_counts(count: int, mix: dict[str, float] | None = None) -> dict[str, int]:
    """How many images of each kind make ``count`` (largest remainders, in :data:`KINDS` order)."""
    mix = MIX if mix is None else mix
    unknown = set(mix) - set(KINDS)
    if unknown or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix must give non-negative shares of {KINDS}, got {mix}")
    total = sum(mix.values())
    exact = {k: count * mix.get(k, 0.0) / total for k in KINDS}
    out = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(KINDS, key=lambda k: (-(exact[k] - out[k]), KINDS.index(k)))[: count - sum(out.values())]:
        out[k] += 1
    return out


def default_mix(art: Art) -> dict[str, float]:
    """:data:`REAL_MIX` when real backgrounds are given (they make the hard negatives), else :data:`MIX`."""
    return REAL_MIX if art.backgrounds else MIX


def subset_of(info: dict) -> str:
    """The group a picture is scored in: the source of a lone real cut-out, ``generated``
    for a lone generated character, else its kind (``multi``, ``empty``, ``episode``)."""
    if info["kind"] == "one":
        src = info["foregrounds"][0]
        return f"cutout-{src[7:].split('/', 1)[0]}" if src.startswith("cutout:") else "generated"
    return info["kind"]


def _write_image(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def iter_split(
    split: str,
    count: int,
    *,
    seed: int = 0,
    art: Art = NO_ART,
    mix: dict[str, float] | None = None,
    size: tuple[int, int] = IMAGE_SIZE,
) -> Iterator[tuple[str, Composite]]:
    """(file stem, picture) of every image of a split, one at a time; ``art`` is the
    split's own real art. ``train`` and ``val`` follow ``mix`` (default :func:`default_mix`);
    ``test`` is all episode frames, or with real cut-outs :data:`TEST_REAL_MIX`, every
    foreground real."""
    base = split_seed(split, seed)
    if split == "test":
        if art.cutouts:
            art = Art(art.cutouts, art.backgrounds, 1.0)
            counts = split_counts(count, TEST_REAL_MIX)
        else:
            counts = {"one": 0, "multi": 0, "empty": 0, "episode": count}
    else:
        counts = split_counts(count, default_mix(art) if mix is None else mix)
    for i in range(counts["one"]):
        yield f"one-{i:05d}", compose_one(child_rng(base, "one", i), size, art)
    for i in range(counts["multi"]):
        yield f"multi-{i:05d}", compose_multi(child_rng(base, "multi", i), size, art)
    for i in range(counts["empty"]):
        yield f"empty-{i:05d}", compose_empty(child_rng(base, "empty", i), size, art)
    for comp in episode_frames(base, counts["episode"], size):
        yield f"ep{comp.info['episode_seed']}-f{comp.info['frame']:05d}", comp


def write_split(
    root: str | Path,
    split: str,
    count: int,
    *,
    seed: int = 0,
    art: Art = NO_ART,
    mix: dict[str, float] | None = None,
    size: tuple[int, int] = IMAGE_SIZE,
    quality: int = JPEG_QUALITY,
    label_maps: bool = False,
    on_image: Callable[[str, Composite], None] | None = None,
) -> dict:
    """Write one split under ``root`` (replacing an old one); return its summary.

    ``label_maps``: also write each picture's instance map as ``labelmaps/<split>/<stem>.png``
    (for tests and inspection). ``subsets/<split>-<group>.txt`` lists the images of each
    :func:`subset_of` group, for scoring per source.
    """
    root = Path(root)
    dirs = {name: root / name / split for name in ("images", "labels", "labelmaps")}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    (root / "labels" / f"{split}.cache").unlink(missing_ok=True)
    dirs["images"].mkdir(parents=True)
    dirs["labels"].mkdir(parents=True)
    if label_maps:
        dirs["labelmaps"].mkdir(parents=True)
    kinds = {k: 0 for k in KINDS}
    instances = dropped = 0
    episode_seeds: set[int] = set()
    cutouts_used: dict[str, int] = {}
    subsets: dict[str, list[str]] = {}
    manifest = root / f"{split}.jsonl"
    tmp_manifest = manifest.with_name(f".{manifest.name}.partial")
    with open(tmp_manifest, "w") as log:
        for stem, comp in iter_split(split, count, seed=seed, art=art, mix=mix, size=size):
            polys = instance_polygons(comp.labels)
            present = int(np.count_nonzero(np.bincount(comp.labels.ravel(), minlength=256)[1:]))
            _write_image(dirs["images"] / f"{stem}.jpg", comp.rgb, quality)
            text = "\n".join(yolo_lines([p for _, p in polys], size))
            (dirs["labels"] / f"{stem}.txt").write_text(text + "\n" if text else "")
            if label_maps:
                cv2.imwrite(str(dirs["labelmaps"] / f"{stem}.png"), comp.labels)
            kinds[comp.info["kind"]] += 1
            subsets.setdefault(subset_of(comp.info), []).append(str(dirs["images"] / f"{stem}.jpg"))
            instances += len(polys)
            dropped += present - len(polys)
            if "episode_seed" in comp.info:
                episode_seeds.add(comp.info["episode_seed"])
            for src in comp.info.get("foregrounds", []):
                if src.startswith("cutout:"):
                    cutouts_used[src[7:]] = cutouts_used.get(src[7:], 0) + 1
            log.write(
                json.dumps({"image": f"images/{split}/{stem}.jpg", "instances": [k for k, _ in polys], **comp.info})
                + "\n"
            )
            if on_image is not None:
                on_image(stem, comp)
    os.replace(tmp_manifest, manifest)
    sub_dir = root / "subsets"
    sub_dir.mkdir(exist_ok=True)
    for old in sub_dir.glob(f"{split}-*.txt"):
        old.unlink()
    for name, images in sorted(subsets.items()):
        (sub_dir / f"{split}-{name}.txt").write_text("\n".join(images) + "\n")
    return {
        "count": count,
        "seed": split_seed(split, seed),
        "kinds": kinds,
        "instances": instances,
        "dropped_small_instances": dropped,
        "episode_seeds": sorted(episode_seeds),
        "cutouts_used": dict(sorted(cutouts_used.items())),
        "subsets": {k: len(v) for k, v in sorted(subsets.items())},
        "characters": sorted({c.character for c in art.cutouts}),
        "background_groups": sorted({b.group for b in art.backgrounds}),
    }


def data_yaml(root: Path, splits: dict[str, Path], comment: str) -> str:
    """The text of a YOLO ``data.yaml``: ``comment``, the dataset's root, each split's
    images (a folder, or a file listing them) and the class names."""
    names = [f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES)]
    return (
        "\n".join([f"# {comment}", f"path: {root}", *(f"{k}: {v}" for k, v in splits.items()), "names:", *names]) + "\n"
    )


def build_dataset(
    root: str | Path,
    *,
    train_images: int,
    val_images: int,
    test_images: int = 0,
    seed: int = 0,
    cutouts: str | Path | None = None,
    backgrounds: str | Path | None = None,
    mix: dict[str, float] | None = None,
    size: tuple[int, int] = IMAGE_SIZE,
    quality: int = JPEG_QUALITY,
    label_maps: bool = False,
    on_image: Callable[[str, str, Composite], None] | None = None,
    split_by: str = "character",
) -> Path:
    """Write a YOLO-seg dataset under ``root``; return its ``data.yaml`` (written last).

    ``cutouts`` / ``backgrounds``: directories of real art (:func:`resolve_art`; None:
    the shared ones when present), split by character and by set between train, val and
    test (:func:`celmask.tasks.trainset.realart.by_split`), so no split sees another's characters.
    ``split_by="pose"`` splits the cut-outs by pose instead (a studio's own cast, every
    character trained on: :func:`celmask.tasks.trainset.realart.by_pose`; without a test
    split, val gets the held-out poses). ``test_images`` > 0 adds a ``test`` split:
    composites of the held-out characters or poses (when there are cut-outs) and frames
    of yet other episodes. Beside ``data.yaml``,
    ``data-<split>-<group>.yaml`` score one :func:`subset_of` group each.
    ``on_image(split, stem, picture)`` is called after each image is written.
    """
    if train_images < 1 or val_images < 1 or test_images < 0:
        raise CelmaskError(
            "images", f"need >= 1 train and val images, got train={train_images}, val={val_images}, test={test_images}"
        )
    split_seed("train", seed)  # validates the seed
    if split_by not in SPLIT_BY:
        raise CelmaskError("split_by", f"must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").unlink(missing_ok=True)
    cut_dir = resolve_art(cutouts, DEFAULT_CUTOUTS)
    bg_dir = resolve_art(backgrounds, DEFAULT_BACKGROUNDS)
    loaded = load_cutouts(cut_dir)
    sets = load_backgrounds(bg_dir)
    if split_by == "pose":
        shares = SPLIT_SHARES if test_images else {"train": SPLIT_SHARES["train"], "val": SPLIT_SHARES["val"]}
        cut_split = by_pose(loaded, seed, shares)
    else:
        cut_split = by_split(loaded, lambda c: c.character, seed)
    bg_split = by_split(sets, lambda b: b.group, seed)
    counts = {"train": train_images, "val": val_images, "test": test_images}
    summary: dict = {
        "version": 1,
        "seed": seed,
        "split_by": split_by,
        "size": list(size),
        "jpeg_quality": quality,
        "mix": dict(default_mix(Art(backgrounds=tuple(sets))) if mix is None else mix),
        "real_art_share": REAL_ART_SHARE,
        "min_instance_fraction": MIN_INSTANCE_FRACTION,
        "cutouts": {
            "dir": str(cut_dir) if cut_dir else None,
            "files": {f"{c.source}/{c.name}": c.sha256 for c in loaded},
        },
        "backgrounds": {
            "dir": str(bg_dir) if bg_dir else None,
            "files": {f"{b.source}/{b.name}": b.sha256 for b in sets},
        },
        "splits": {},
    }
    for split, n in counts.items():
        if n == 0:
            for name in ("images", "labels", "labelmaps"):
                shutil.rmtree(root / name / split, ignore_errors=True)
            (root / f"{split}.jsonl").unlink(missing_ok=True)
            continue
        cb = None if on_image is None else (lambda stem, comp, _s=split: on_image(_s, stem, comp))
        summary["splits"][split] = write_split(
            root,
            split,
            n,
            seed=seed,
            art=Art(tuple(cut_split[split]), tuple(bg_split[split])),
            mix=mix,
            size=size,
            quality=quality,
            label_maps=label_maps,
            on_image=cb,
        )
    (root / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    for old in root.glob("data-*.yaml"):
        old.unlink()
    for listing in sorted((root / "subsets").glob("*.txt")):
        if not listing.stem.endswith("-empty"):  # no characters: nothing to score mAP on
            text = data_yaml(root, {"train": listing, "val": listing}, f"{listing.stem} of the dataset in {root}")
            (root / f"data-{listing.stem}.yaml").write_text(text)
    splits = {split: root / "images" / split for split in SPLITS if split in summary["splits"]}
    tmp = root / ".data.yaml.partial"
    tmp.write_text(data_yaml(root, splits, f"celmask detector dataset (tasks/trainset/composites.py), seed {seed}"))
    os.replace(tmp, root / "data.yaml")
    return root / "data.yaml"
