"""Weight-free propagation: dense optical flow (OpenCV DIS) carries each mask frame to frame.

Per step, flow is computed both ways between the previous and the current frame on grey
images at a working width (``FlowConfig.work_width``: DIS cost grows with pixels, and
anime's flat colour pieces give it nothing to match inside them anyway; the lines, which
move, carry the motion at any scale). Each object's soft mask is *backward* warped
(every current pixel samples the previous mask where its flow points), so it cannot
smear into holes, and a pixel whose flow points off-frame samples 0: an object that
leaves the frame empties. The forward-backward test (Sundaram et al. 2010) marks flow
that is not reliable (occlusions, disocclusions, lost texture); there the warp is held
back and the frame's own detection, when it agrees with the warp, takes over. The soft
mask is thresholded at 0.5 for output and cut to that support, so it cannot grow
without limit. Work per object is confined to its box (widened by the largest motion).

    propagator = FlowPropagator(FlowConfig())
    for masks, confidence in propagator.propagate(frames, key_masks, guides):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from models.propagator import Guide
from tasks.masks import mask_iou

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
"""OpenCV DIS presets by name: more patch iterations and finer scales to the right."""
TEXTURE_CONTRAST = 16
"""Grey-level range in a 3x3 neighbourhood above which a pixel is on a line or edge."""


@dataclass(frozen=True)
class FlowConfig:
    preset: str = "fast"
    """DIS preset, one of PRESETS."""
    work_width: int = 640
    """Flow is computed on frames shrunk to this width (never enlarged); masks stay at full size."""
    fb_relative: float = 0.01
    fb_absolute: float = 0.5
    """Flow at a pixel is unreliable when |f_bw(x) + f_fw(x + f_bw(x))|^2 exceeds
    ``fb_relative * (|f_bw|^2 + |f_fw|^2) + fb_absolute`` (pixels at working size)."""
    unreliable_keep: float = 0.9
    """Share of the warped mask kept per step where flow is unreliable (occlusions fade out)."""
    agree_iou: float = 0.5
    """A detection is fused only where its IoU with the warped mask is at least this."""
    warp_weight: float = 0.75
    warp_weight_unreliable: float = 0.2
    """Weight of the warp against an agreeing detection, where flow is reliable / unreliable."""
    confidence_decay: float = 0.97
    """Confidence factor per step since the last agreeing detection."""
    colour_tolerance: float = 40.0
    """Flow (or a move) is trusted only where it lands on the colour it left: no RGB channel
    differs by more than this (0-255). Anime's flat colours make this a sharp test."""
    search: float = 0.15
    """How far (share of the frame's width) an object's look is searched for when flow misses a large move."""
    min_area: int = 20
    """Masks with fewer pixels are emptied (an object that left the frame leaves no crumbs)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"flow preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.work_width < 32:
            raise ValueError(f"flow work_width must be >= 32, got {self.work_width}")
        shares = {
            "unreliable_keep": self.unreliable_keep, "agree_iou": self.agree_iou, "warp_weight": self.warp_weight,
            "warp_weight_unreliable": self.warp_weight_unreliable, "confidence_decay": self.confidence_decay,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"flow {name} must be in [0, 1], got {value}")
        if min(self.fb_relative, self.fb_absolute, self.colour_tolerance, self.min_area) < 0:
            raise ValueError("flow fb_relative, fb_absolute, colour_tolerance and min_area must be >= 0")


@dataclass
class _Track:
    """One object's state between steps: its soft mask inside a box of the frame."""

    soft: np.ndarray
    """(h, w) float32 in [0, 1], the mask's support and a 1-pixel soft rim."""
    y0: int
    x0: int
    steps_since_agreement: int = 0


class FlowPropagator:
    """Masks carried by DIS optical flow, fused with the frame's agreeing detections."""

    def __init__(self, config: FlowConfig = FlowConfig()) -> None:
        self.config = config
        self.model_id = f"flow:dis-{config.preset}"

    def propagate(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """See :meth:`models.propagator.Propagator.propagate`."""
        masks = check_inputs(frames, masks, guides)
        return self._steps(frames, masks, guides)

    def _steps(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cfg = self.config
        frame_size = masks.shape[1:]
        dis = cv2.DISOpticalFlow_create(PRESETS[cfg.preset])
        work = _work_size(frame_size, cfg.work_width)
        tracks = [_crop(m.astype(np.float32), 0, 0, 0) for m in masks]
        previous = _shrink(frames[0], work)
        for t in range(1, len(frames)):
            current = _shrink(frames[t], work)
            pair = _flow_pair(dis, previous, current, frame_size, cfg)
            guide = guides[t] if guides is not None else None
            out = np.zeros(masks.shape, bool)
            confidence = np.zeros(len(masks), np.float32)
            for i, track in enumerate(tracks):
                detected = guide.mask[i] if guide is not None and guide.present[i] else None
                tracks[i], confidence[i] = _step(track, pair, detected, out[i], cfg)
            previous = current
            yield out, confidence


def check_inputs(frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None) -> np.ndarray:
    """``masks`` as (k, H, W) bool after checking it against the keyframe and the guides (ValueError)."""
    masks = np.asarray(masks)
    if len(frames) == 0:
        raise ValueError("propagation needs at least the keyframe, got no frames")
    size = frames[0].shape[:2]
    if masks.ndim != 3 or masks.shape[1:] != size:
        raise ValueError(f"masks must have shape (k, {size[0]}, {size[1]}) like the keyframe, but got {masks.shape}")
    if guides is not None and len(guides) != len(frames):
        raise ValueError(f"guides must be None or one per frame ({len(frames)}), but got {len(guides)}")
    return masks.astype(bool, copy=False)


def _work_size(frame_size: tuple[int, int], work_width: int) -> tuple[int, int]:
    """(h, w) at which flow is computed: the frame shrunk to ``work_width``, never enlarged."""
    height, width = frame_size
    if width <= work_width:
        return height, width
    return max(8, round(height * work_width / width)), work_width


def _shrink(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return rgb if rgb.shape[:2] == size else cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class _Pair:
    """Two consecutive frames at working size and the flow between them both ways."""

    previous: np.ndarray
    current: np.ndarray
    """(h, w, 3) uint8 RGB at working size."""
    backward: np.ndarray
    forward: np.ndarray
    """(h, w, 3) float32 at working size: x and y displacement in *frame* pixels (current
    -> previous, previous -> current), then its reliability, 0 or 1."""
    frame_size: tuple[int, int]
    reach: int
    """Largest displacement in frame pixels, rounded up: how far a mask can move this step."""
    colour_tolerance: float

    def sample(self, data: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """``data`` (at working size) at the frame pixels [top, bottom) x [left, right)."""
        h, w = data.shape[:2]
        if (h, w) == self.frame_size:
            return data[top:bottom, left:right]
        sy, sx = h / self.frame_size[0], w / self.frame_size[1]
        xs = ((np.arange(left, right, dtype=np.float32) + 0.5) * sx - 0.5)[None, :]
        ys = ((np.arange(top, bottom, dtype=np.float32) + 0.5) * sy - 0.5)[:, None]
        shape = (bottom - top, right - left)
        map_x, map_y = np.broadcast_to(xs, shape).copy(), np.broadcast_to(ys, shape).copy()
        return cv2.remap(data, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def shift_agrees(self, dx: float, dy: float) -> np.ndarray:
        """(h, w) float32 at working size: 1 where the current frame has the colour the
        previous one has ``(dx, dy)`` frame pixels back, i.e. where a move by (dx, dy) explains it."""
        h, w = self.current.shape[:2]
        sy, sx = h / self.frame_size[0], w / self.frame_size[1]
        shift = np.float32([[1, 0, dx * sx], [0, 1, dy * sy]])
        moved = cv2.warpAffine(self.previous, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return _same_colour(self.current, moved, self.colour_tolerance)


def _same_colour(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """(h, w) float32: 1 where no channel of ``a`` and ``b`` differs by more than ``tolerance``."""
    same = cv2.inRange(cv2.absdiff(a, b), (0,) * a.shape[2], (tolerance,) * a.shape[2])
    same = cv2.morphologyEx(same, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return same.astype(np.float32) / 255.0


def _flow_pair(
    dis: cv2.DISOpticalFlow, previous: np.ndarray, current: np.ndarray, frame_size: tuple[int, int], cfg: FlowConfig
) -> _Pair:
    """DIS flow both ways between two working-size frames, each direction with its
    forward-backward and colour reliability."""
    grey_previous = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
    grey_current = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    forward = dis.calc(grey_previous, grey_current, None)
    backward = dis.calc(grey_current, grey_previous, None)
    h, w = grey_current.shape
    scale = np.float32([w / frame_size[1], h / frame_size[0]])
    reach = math.ceil(float(max(np.abs(forward).max(initial=0.0), np.abs(backward).max(initial=0.0)) / scale.min())) + 1
    return _Pair(
        previous, current,
        np.dstack([backward / scale, _reliable(backward, forward, current, previous, _textured(grey_current), cfg)]),
        np.dstack([forward / scale, _reliable(forward, backward, previous, current, _textured(grey_previous), cfg)]),
        frame_size, reach, cfg.colour_tolerance,
    )


def _textured(grey: np.ndarray) -> np.ndarray:
    """(h, w) bool: within a DIS patch (8 px) of a line or edge. Elsewhere, inside a flat
    colour piece, DIS has nothing to match and its flow is an interpolation."""
    contrast = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return cv2.dilate((contrast > TEXTURE_CONTRAST).view(np.uint8), np.ones((9, 9), np.uint8)).view(bool)


def _reliable(
    flow: np.ndarray, other: np.ndarray, here: np.ndarray, there: np.ndarray, textured: np.ndarray, cfg: FlowConfig
) -> np.ndarray:
    """(h, w) float32, 1 where ``flow`` (from image ``here`` to ``there``) is trusted: it stays in
    the frame, the colour it lands on is the colour it left, and, where ``here`` has texture,
    the flow back (``other``) returns it home (|flow(x) + other(x + flow(x))|^2 small against
    their magnitudes). Inside flat pieces the forward-backward test fails at random (both
    flows are guesses) while landing on the same colour is all a mask needs."""
    h, w = flow.shape[:2]
    tx = np.arange(w, dtype=np.float32)[None, :] + flow[..., 0]
    ty = np.arange(h, dtype=np.float32)[:, None] + flow[..., 1]
    back = cv2.remap(other, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = _squared_length(flow + back)
    bound = cfg.fb_relative * (_squared_length(flow) + _squared_length(back)) + cfg.fb_absolute
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    landed = cv2.remap(there, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (((error <= bound) | ~textured) & inside).astype(np.float32) * _same_colour(here, landed, cfg.colour_tolerance)


def _squared_length(vectors: np.ndarray) -> np.ndarray:
    x, y = vectors[..., 0], vectors[..., 1]
    return x * x + y * y


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a (H, W) bool mask's pixels; empty when it has none."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return y, y + h, x, x + w


def _object_motion(track: _Track, pair: _Pair, search: float) -> tuple[float, float]:
    """The object's own move this step, in frame pixels. Two guesses: the median forward
    flow over its pixels (where reliable, if enough are), and where its previous look
    matches best in the current frame within ``search`` (share of the width) of where it
    was, which finds the large moves DIS misses (a drawing on 2s jumps far). The guess
    under which more of its pixels keep their colour wins."""
    h, w = track.soft.shape
    flow = pair.sample(pair.forward, track.y0, track.y0 + h, track.x0, track.x0 + w)
    inside = track.soft > 0.5
    trusted = inside & (flow[..., 2] > 0.5)
    vectors = flow[..., :2][trusted if np.count_nonzero(trusted) * 4 >= np.count_nonzero(inside) else inside]
    guesses = [tuple(np.median(vectors, axis=0))]
    work_h, work_w = pair.current.shape[:2]
    sy, sx = work_h / pair.frame_size[0], work_w / pair.frame_size[1]
    top, left = int(track.y0 * sy), int(track.x0 * sx)
    size = (max(1, round(w * sx)), max(1, round(h * sy)))
    mask = cv2.resize(track.soft, size, interpolation=cv2.INTER_AREA)[: work_h - top, : work_w - left] > 0.5
    look = pair.previous[top : top + mask.shape[0], left : left + mask.shape[1]]
    if np.count_nonzero(mask) >= 16:
        radius = max(2, round(search * work_w))
        s_top, s_left = max(top - radius, 0), max(left - radius, 0)
        region = pair.current[s_top : top + mask.shape[0] + radius, s_left : left + mask.shape[1] + radius]
        score = cv2.matchTemplate(region, look, cv2.TM_SQDIFF, mask=mask.view(np.uint8))
        _, _, (mx, my), _ = cv2.minMaxLoc(score)
        guesses.append(((s_left + mx - left) / sx, (s_top + my - top) / sy))
    agreement = [_kept_colour(look, mask, pair.current, top, left, dx * sx, dy * sy, pair.colour_tolerance)
                 for dx, dy in guesses]
    dx, dy = guesses[int(np.argmax(agreement))]
    return float(dx), float(dy)


def _kept_colour(look: np.ndarray, mask: np.ndarray, image: np.ndarray, top: int, left: int, dx: float, dy: float,
                 tolerance: float) -> float:
    """Share of the ``mask`` pixels of ``look`` (placed at top, left) whose colour ``image``
    has ``(dx, dy)`` further on; pixels moved out of the frame count as kept (they left)."""
    h, w = mask.shape
    xs = np.broadcast_to(np.arange(left, left + w, dtype=np.float32)[None, :] + np.float32(dx), (h, w)).copy()
    ys = np.broadcast_to(np.arange(top, top + h, dtype=np.float32)[:, None] + np.float32(dy), (h, w)).copy()
    moved = cv2.remap(image, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    kept = (_same_colour(look, moved, tolerance) > 0) | (xs < 0) | (xs > image.shape[1] - 1) | (ys < 0) | (ys > image.shape[0] - 1)
    return float(kept[mask].mean())


def _step(
    track: _Track, pair: _Pair, detected: np.ndarray | None, out: np.ndarray, cfg: FlowConfig
) -> tuple[_Track, float]:
    """Carry one object's mask into the current frame: writes it into ``out`` (H, W bool)
    and returns the new track and the object's confidence.

    Each pixel takes the previous mask where its own flow points if that flow is reliable,
    else where the object's overall move points if that explains its colour, else a faded
    share of the flow's answer."""
    steps = track.steps_since_agreement + 1
    if track.soft.size == 0:  # gone (left the frame): nothing to carry, nothing to agree with
        return _Track(track.soft, track.y0, track.x0, steps), cfg.confidence_decay**steps
    height, width = pair.frame_size
    dx, dy = _object_motion(track, pair, cfg.search)
    reach = max(pair.reach, math.ceil(max(abs(dx), abs(dy))) + 1)
    h, w = track.soft.shape
    top, bottom = max(track.y0 - reach, 0), min(track.y0 + h + reach, height)
    left, right = max(track.x0 - reach, 0), min(track.x0 + w + reach, width)
    if detected is not None:
        d_top, d_bottom, d_left, d_right = _box(detected)
        if d_bottom > d_top:
            top, bottom = min(top, d_top), max(bottom, d_bottom)
            left, right = min(left, d_left), max(right, d_right)
    backward = pair.sample(pair.backward, top, bottom, left, right)
    xs = np.arange(left - track.x0, right - track.x0, dtype=np.float32)[None, :]
    ys = np.arange(top - track.y0, bottom - track.y0, dtype=np.float32)[:, None]
    dense = _warp(track.soft, xs + backward[..., 0], ys + backward[..., 1])
    rigid = _warp(track.soft, np.broadcast_to(xs - dx, dense.shape), np.broadcast_to(ys - dy, dense.shape))
    reliable = backward[..., 2]
    explained = pair.sample(pair.shift_agrees(dx, dy), top, bottom, left, right)
    soft = reliable * dense + (1.0 - reliable) * (explained * rigid + (1.0 - explained) * cfg.unreliable_keep * dense)
    trust = reliable + (1.0 - reliable) * explained
    if detected is not None:
        crop = detected[top:bottom, left:right]
        if mask_iou((soft > 0.5)[None], crop[None])[0, 0] >= cfg.agree_iou:
            weight = cfg.warp_weight_unreliable + (cfg.warp_weight - cfg.warp_weight_unreliable) * trust
            soft = weight * soft + (1.0 - weight) * crop
            steps = 0
    binary = soft > 0.5
    if np.count_nonzero(binary) < max(cfg.min_area, 1):
        return _Track(np.zeros((0, 0), np.float32), top, left, steps), cfg.confidence_decay**steps
    out[top:bottom, left:right] = binary
    return _crop(soft, top, left, steps), float(trust[binary].mean()) * cfg.confidence_decay**steps


def _warp(soft: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``soft`` sampled at (map_x, map_y), 0 outside it."""
    return cv2.remap(soft, np.ascontiguousarray(map_x, np.float32), np.ascontiguousarray(map_y, np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _crop(soft: np.ndarray, y0: int, x0: int, steps: int) -> _Track:
    """A track holding the support (soft > 0.5) of ``soft``, placed at (y0, x0), and a 1-pixel rim."""
    top, bottom, left, right = _box(soft > 0.5)
    if bottom == top:
        return _Track(np.zeros((0, 0), np.float32), y0, x0, steps)
    top, left = max(top - 1, 0), max(left - 1, 0)
    bottom, right = min(bottom + 1, soft.shape[0]), min(right + 1, soft.shape[1])
    return _Track(np.ascontiguousarray(soft[top:bottom, left:right]), y0 + top, x0 + left, steps)
