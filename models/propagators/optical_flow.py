"""Weight-free propagation: dense optical flow (OpenCV DIS) carries each mask frame to frame.

Per step, DIS flow is computed both ways between the previous and the current frame, on
grey images at a working width (``OpticalFlowConfig.work_width``; masks stay at full size).
Each object's soft mask is *backward* warped: every current pixel samples the previous
mask where its flow points, so the mask cannot smear into holes, and a pixel whose flow
points off-frame samples 0, so an object that leaves the frame empties.

A pixel's flow is reliable where it passes the forward-backward test (Sundaram et al.
2010: |f_bw(x) + f_fw(x + f_bw(x))| small against the flows) and lands on the colour it
left. Anime needs both halves: inside a flat colour piece DIS has nothing to match and
both flows are guesses (the test is skipped there; landing on the same colour is all a
mask needs), while lines move and carry the motion. Where a pixel's flow is unreliable
(occlusion, a limb redrawn, a jump too large for DIS) it takes the previous mask moved by
the *object's* move instead, if that explains its colour: the median flow over the
object, or, when that keeps too few of its colours, where the object's previous look is
found again nearby (drawings on 2s jump far). Otherwise it fades.

A frame's own detection of the object (a ``Guide``) is fused where it agrees (IoU with
the warp, or with the whole object moved, at least ``agree_iou``): a pixel-wise blend
that favours the warp where it is reliable and the detection where it is not, so drift
is corrected and the mask stays steady. The soft mask is thresholded at 0.5 and cut to
its support, and parts too small to be the object are dropped, so it neither grows
without limit nor leaves crumbs at the border. Confidence is how far the *propagation*
can be trusted: the share of the object's pixels that reliable flow or the object's move
explained, decayed by the steps since a detection last agreed (flow that drifted onto
the background can look reliable; only agreement vouches for a mask for long). Where it
is low and the frame has its own detection, the caller lets the detection stand. Work
per object is confined to its box widened by the step's largest move.

Every track of a shot is propagated on its own, both ways, over the same drawings, so
within :meth:`OpticalFlowPropagator.sharing` (one shot) the work that depends only on
the drawings is done once (:class:`SharedWork`): each drawing at working size with its
grey image and texture, and the flow between each two drawings, both ways, with its
reliability. Results are the same bytes with or without it.

    propagator = OpticalFlowPropagator(OpticalFlowConfig())
    with propagator.sharing():   # optional: shares the flow between the propagations inside
        for masks, confidence in propagator.propagate(frames, key_masks, guides):
            ...
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, TypeVar

import cv2
import numpy as np

from celmask.models.propagators.base import Guide
from celmask.models.weights import model_id
from celmask.tasks.core.config import NON_NEGATIVE, SHARE, OneOf, Range, check_rules
from celmask.tasks.core.masks import mask_iou

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
"""OpenCV DIS presets by name: more patch iterations and finer scales to the right."""
WELL_EXPLAINED = 0.9
"""An object move that keeps this share of its pixels' colours needs no search for a better one."""
TEXTURE_CONTRAST = 16
"""Grey-level range in a 3x3 neighbourhood above which a pixel is on a line or edge."""
PAIR_SUM = np.ones((1, 2), np.float32)
"""cv2.transform matrix that adds a 2-channel image's channels."""
SHARED_BYTES = 768 << 20
"""Most bytes of drawings and flows :meth:`OpticalFlowPropagator.sharing` keeps, least
recently used going first: a step both ways between two drawings keeps ~9 MB at the
default 640-wide flow, so ~80 drawings of a shot are shared whole (most shots have
fewer); a longer shot recomputes what went."""
T = TypeVar("T")


@dataclass(frozen=True)
class OpticalFlowConfig:
    preset: Annotated[str, OneOf(tuple(PRESETS))] = "ultrafast"
    """DIS preset, one of PRESETS (ultrafast: as good as fast on the benchmarks, cheaper; bench/README.md)."""
    work_width: Annotated[int, Range(32)] = 640
    """Flow is computed on frames shrunk to this width (never enlarged); masks stay at full size."""
    fb_relative: Annotated[float, NON_NEGATIVE] = 0.01
    fb_absolute: Annotated[float, NON_NEGATIVE] = 0.5
    """Flow at a pixel is unreliable when |f_bw(x) + f_fw(x + f_bw(x))|^2 exceeds
    ``fb_relative * (|f_bw|^2 + |f_fw|^2) + fb_absolute`` (squared pixels at working size)."""
    unreliable_keep: Annotated[float, SHARE] = 0.5
    """Share of the warped mask kept where neither the flow nor the object's move explains
    a pixel (0.5 and below: such pixels leave the mask at once)."""
    agree_iou: Annotated[float, SHARE] = 0.3
    """A detection is fused only when its IoU with the warped mask (or with the whole
    object moved) is at least this."""
    warp_weight: Annotated[float, SHARE] = 0.6
    warp_weight_unreliable: Annotated[float, SHARE] = 0.2
    """Weight of the warp against an agreeing detection, where flow is reliable / unreliable."""
    confidence_decay: Annotated[float, SHARE] = 0.97
    """Confidence factor per step since the last agreeing detection."""
    colour_tolerance: Annotated[float, Range(0, 255)] = 24.0
    """Flow (or a move) is trusted only where it lands on the colour it left: no RGB channel
    differs by more than this (0-255). Anime's flat colours make this a sharp test."""
    search: Annotated[float, SHARE] = 0.25
    """How far (share of the frame's width) an object's look is searched for when flow misses a large move."""
    min_part: Annotated[float, SHARE] = 0.01
    min_area: Annotated[int, NON_NEGATIVE] = 20
    """Connected parts of a mask smaller than ``min_part`` of its keyframe area (or than
    ``min_area`` pixels) are dropped: flow leaves crumbs on the background, and an object
    that leaves the frame must end empty, not stuck at the border."""

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass(frozen=True)
class _Track:
    """One object's state between steps: its soft mask inside a box of the frame."""

    soft: np.ndarray
    """(h, w) float32 in [0, 1], the mask's support and a 1-pixel soft rim."""
    y0: int
    x0: int
    steps_since_agreement: int
    min_part: int
    """Pixels a connected part needs to be kept."""
    motion: tuple[float, float] = (0.0, 0.0)
    """The object's last move (dx, dy) in frame pixels."""


def flow_model_id(config: OpticalFlowConfig) -> str:
    """The id of an :class:`OpticalFlowPropagator` with ``config``: DIS at its preset."""
    return model_id("flow", version=f"dis-{config.preset}")


class SharedWork:
    """Values computed from frames, kept by the frames' identity (``id``) for the
    propagations of one shot; an entry holds its frames, so no id is reused while it
    is kept. Entries past ``budget`` bytes go, least recently used first; 0 keeps none."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.computed: Counter[str] = Counter()
        """Values computed per kind: what the sharing saved shows against the steps."""
        self.peak = 0
        """Most bytes kept at once."""
        self._entries: OrderedDict[tuple[object, ...], tuple[object, tuple[np.ndarray, ...], int]] = OrderedDict()
        self._bytes = 0

    def peek(self, kind: str, frames: tuple[np.ndarray, ...]) -> object | None:
        entry = self._entries.get((kind, *map(id, frames)))
        return None if entry is None else entry[0]

    def pop(self, kind: str, frames: tuple[np.ndarray, ...]) -> object | None:
        """The kept value, no longer kept (its last use)."""
        entry = self._entries.pop((kind, *map(id, frames)), None)
        if entry is None:
            return None
        self._bytes -= entry[2]
        return entry[0]

    def get(self, kind: str, frames: tuple[np.ndarray, ...], make: Callable[[], tuple[T, int]]) -> T:
        """The value of ``kind`` for ``frames``: kept, else ``make()`` -> (value, its bytes)."""
        key = (kind, *map(id, frames))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[0]  # type: ignore[return-value]
        value, size = make()
        self.computed[kind] += 1
        if size <= self.budget:
            self._entries[key] = (value, frames, size)
            self._bytes += size
            self.peak = max(self.peak, min(self._bytes, self.budget))
            while self._bytes > self.budget:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value


class OpticalFlowPropagator:
    """Masks carried by DIS optical flow, fused with the frame's agreeing detections."""

    def __init__(self, config: OpticalFlowConfig = OpticalFlowConfig()) -> None:
        self.config = config
        self.model_id = flow_model_id(config)
        self._sharing = threading.local()

    @property
    def shared(self) -> SharedWork | None:
        """The work shared inside :meth:`sharing` in this thread, else None."""
        return getattr(self._sharing, "work", None)

    @contextlib.contextmanager
    def sharing(self, budget: int = SHARED_BYTES) -> Iterator[SharedWork]:
        """Propagations started inside, in this thread, share the drawings at working size
        and the flows between them, kept up to ``budget`` bytes and freed on exit. Keyed
        by the frame arrays' identity: for the propagations of one shot, whose frames are
        not changed in place meanwhile."""
        self._sharing.work = SharedWork(budget)
        try:
            yield self._sharing.work
        finally:
            self._sharing.work = None

    def propagate(
        self, frames: Sequence[np.ndarray], masks: np.ndarray, guides: Sequence[Guide | None] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """See :meth:`celmask.models.propagators.base.Propagator.propagate`."""
        masks = check_inputs(frames, masks, guides)
        return self._steps(frames, masks, guides, self.shared or SharedWork(0))

    def _steps(
        self,
        frames: Sequence[np.ndarray],
        masks: np.ndarray,
        guides: Sequence[Guide | None] | None,
        shared: SharedWork,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cfg = self.config
        frame_size = masks.shape[1:]
        dis = cv2.DISOpticalFlow_create(PRESETS[cfg.preset])
        work = _work_size(frame_size, cfg.work_width)
        tracks = [_start(m, cfg) for m in masks]
        grid = np.dstack(np.meshgrid(np.arange(work[1], dtype=np.float32), np.arange(work[0], dtype=np.float32)))
        for t in range(1, len(frames)):
            pair = _shared_pair(shared, dis, frames[t - 1], frames[t], work, grid, cfg)
            guide = guides[t] if guides is not None else None
            out = np.zeros(masks.shape, bool)
            confidence = np.zeros(len(masks), np.float32)
            for i, track in enumerate(tracks):
                detected = guide.mask[i] if guide is not None and guide.present[i] else None
                tracks[i], confidence[i] = _step(track, pair, detected, out[i], cfg)
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


@dataclass(frozen=True)
class _Drawing:
    """A frame at working size, with what every flow to or from it needs."""

    rgb: np.ndarray
    grey: np.ndarray
    textured: np.ndarray
    """See :func:`_textured`."""


def _drawing(rgb: np.ndarray, size: tuple[int, int]) -> _Drawing:
    work = rgb if rgb.shape[:2] == size else cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    return _Drawing(work, grey, _textured(grey))


def _shared_pair(
    shared: SharedWork,
    dis: cv2.DISOpticalFlow,
    previous: np.ndarray,
    current: np.ndarray,
    work: tuple[int, int],
    grid: np.ndarray,
    cfg: OpticalFlowConfig,
) -> _Pair:
    """The :class:`_Pair` of two full-size frames, from ``shared`` where it was made
    before; the step the other way reuses its two DIS flows, swapped."""

    def make() -> tuple[_Pair, int]:
        a, b = (
            shared.get("drawing", (rgb,), lambda rgb=rgb: _sized(_drawing(rgb, work))) for rgb in (previous, current)
        )
        reverse = shared.pop("flows", (current, previous))
        if reverse is not None:
            backward, forward = reverse  # type: ignore[misc]
        else:
            forward, backward = shared.get(
                "flows",
                (previous, current),
                lambda: _sized((dis.calc(a.grey, b.grey, None), dis.calc(b.grey, a.grey, None))),
            )
        return _sized(_flow_pair(a, b, forward, backward, previous.shape[:2], grid, cfg))

    return shared.get("pair", (previous, current), make)


def _sized(value: T) -> tuple[T, int]:
    """``value`` and the bytes of its arrays (a tuple's, or a dataclass's fields')."""
    parts = value if isinstance(value, tuple) else vars(value).values()
    return value, sum(p.nbytes for p in parts if isinstance(p, np.ndarray))


@dataclass(frozen=True)
class _Pair:
    """Two consecutive frames at working size and the flow between them both ways."""

    previous: np.ndarray
    current: np.ndarray
    """(h, w, 3) uint8 RGB at working size."""
    backward: np.ndarray
    """(h, w, 3) float32 at working size: x and y displacement (current -> previous) in
    *frame* pixels, then its reliability, 0 or 1."""
    forward: np.ndarray
    """(h, w, 2) float32 at working size: x and y displacement (previous -> current) in frame pixels."""
    frame_size: tuple[int, int]
    reach: int
    """Largest displacement in frame pixels, rounded up: how far a mask can move this step."""
    colour_tolerance: float

    @property
    def scale(self) -> tuple[float, float]:
        """Working size over frame size, (x, y)."""
        h, w = self.current.shape[:2]
        return w / self.frame_size[1], h / self.frame_size[0]

    def sample(
        self, data: np.ndarray, top: int, bottom: int, left: int, right: int, origin: tuple[int, int] = (0, 0)
    ) -> np.ndarray:
        """``data``, a working-size array whose pixel (0, 0) is the working frame's pixel
        ``origin`` (y, x), at the frame pixels [top, bottom) x [left, right)."""
        sx, sy = self.scale
        if sx == sy == 1:
            return data[top - origin[0] : bottom - origin[0], left - origin[1] : right - origin[1]]
        xs = ((np.arange(left, right, dtype=np.float32) + 0.5) * np.float32(sx) - (0.5 + origin[1]))[None, :]
        ys = ((np.arange(top, bottom, dtype=np.float32) + 0.5) * np.float32(sy) - (0.5 + origin[0]))[:, None]
        shape = (bottom - top, right - left)
        map_x, map_y = np.broadcast_to(xs, shape).copy(), np.broadcast_to(ys, shape).copy()
        return cv2.remap(data, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def move_explains(self, top: int, bottom: int, left: int, right: int, dx: float, dy: float) -> np.ndarray:
        """(bottom - top, right - left) float32: 1 at the frame pixels where the current
        frame has the colour the previous one has (dx, dy) back, i.e. a move by (dx, dy)
        explains it. Compared at working size, like the flow."""
        sx, sy = self.scale
        h, w = self.current.shape[:2]
        w_top, w_left = max(math.floor(top * sy) - 1, 0), max(math.floor(left * sx) - 1, 0)
        w_bottom, w_right = min(math.ceil(bottom * sy) + 1, h), min(math.ceil(right * sx) + 1, w)
        shift = np.float32([[1, 0, w_left - dx * sx], [0, 1, w_top - dy * sy]])
        before = cv2.warpAffine(
            self.previous,
            shift,
            (w_right - w_left, w_bottom - w_top),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        same = _same_colour(self.current[w_top:w_bottom, w_left:w_right], before, self.colour_tolerance)
        return self.sample(same, top, bottom, left, right, (w_top, w_left))


def _same_colour(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """(h, w) float32: 1 where no channel of ``a`` and ``b`` differs by more than ``tolerance``."""
    same = cv2.inRange(cv2.absdiff(a, b), (0,) * a.shape[2], (tolerance,) * a.shape[2])
    same = cv2.morphologyEx(same, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return same.astype(np.float32) / 255.0


def _flow_pair(
    previous: _Drawing,
    current: _Drawing,
    forward: np.ndarray,
    backward: np.ndarray,
    frame_size: tuple[int, int],
    grid: np.ndarray,
    cfg: OpticalFlowConfig,
) -> _Pair:
    """The step between two working-size drawings from the DIS flows between them both
    ways; the backward flow (the one masks are warped with) gets its forward-backward
    and colour reliability."""
    h, w = current.grey.shape
    to_frame = (frame_size[1] / w, frame_size[0] / h, 0.0, 0.0)
    largest = max(abs(v) for flow in (forward, backward) for v in cv2.minMaxLoc(flow.reshape(-1))[:2])
    reliable = _reliable(backward, forward, current.rgb, previous.rgb, current.textured, grid, cfg)
    return _Pair(
        previous.rgb,
        current.rgb,
        cv2.merge([cv2.multiply(backward, to_frame), reliable]),
        cv2.multiply(forward, to_frame),
        frame_size,
        math.ceil(largest * max(to_frame)) + 1,
        cfg.colour_tolerance,
    )


def _textured(grey: np.ndarray) -> np.ndarray:
    """(h, w) bool: within a DIS patch (8 px) of a line or edge. Elsewhere, inside a flat
    colour piece, DIS has nothing to match and its flow is an interpolation."""
    contrast = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return cv2.dilate((contrast > TEXTURE_CONTRAST).view(np.uint8), np.ones((9, 9), np.uint8)).view(bool)


def _reliable(
    flow: np.ndarray,
    other: np.ndarray,
    here: np.ndarray,
    there: np.ndarray,
    textured: np.ndarray,
    grid: np.ndarray,
    cfg: OpticalFlowConfig,
) -> np.ndarray:
    """(h, w) float32, 1 where ``flow`` (from image ``here`` to ``there``) is trusted: it stays in
    the frame, the colour it lands on is the colour it left, and, where ``here`` has texture,
    the flow back (``other``) returns it home (|flow(x) + other(x + flow(x))|^2 small against
    their magnitudes). Inside flat pieces the forward-backward test fails at random (both
    flows are guesses) while landing on the same colour is all a mask needs."""
    h, w = flow.shape[:2]
    target = cv2.add(flow, grid)
    back = cv2.remap(other, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    loop = cv2.add(flow, back)
    error = cv2.transform(cv2.multiply(loop, loop), PAIR_SUM)
    size = cv2.transform(cv2.add(cv2.multiply(flow, flow), cv2.multiply(back, back)), PAIR_SUM)
    consistent = error <= np.float32(cfg.fb_relative) * size + np.float32(cfg.fb_absolute)
    inside = cv2.inRange(target, (0.0, 0.0), (w - 1.0, h - 1.0)).view(bool)
    landed = cv2.remap(there, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return ((consistent | ~textured) & inside).astype(np.float32) * _same_colour(here, landed, cfg.colour_tolerance)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a (H, W) bool mask's pixels; empty when it has none."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return y, y + h, x, x + w


def _object_motion(track: _Track, pair: _Pair, search: float) -> tuple[float, float]:
    """The object's own move this step, in frame pixels. Guesses, each taken when it
    keeps most of the object's colours, else the one that keeps the most: the median
    forward flow over its pixels; its last move again (what carries it out of the frame,
    where its look can no longer be matched whole); where its previous look matches best
    in the current frame within ``search`` (share of the width) of where it was, which
    finds the large moves DIS misses (a drawing on 2s can jump far)."""
    h, w = track.soft.shape
    work_h, work_w = pair.current.shape[:2]
    sx, sy = pair.scale
    top, left = int(track.y0 * sy), int(track.x0 * sx)
    size = (max(1, round(w * sx)), max(1, round(h * sy)))
    mask = cv2.resize(track.soft, size, interpolation=cv2.INTER_AREA)[: work_h - top, : work_w - left] > 0.5
    look = pair.previous[top : top + mask.shape[0], left : left + mask.shape[1]]
    flow = pair.forward[top : top + mask.shape[0], left : left + mask.shape[1]]
    if not mask.any():  # too thin to show at working size: its box stands in for it
        mask = np.ones_like(mask)

    def kept(move: tuple[float, float]) -> float:
        return _kept_colour(look, mask, pair.current, top, left, move[0] * sx, move[1] * sy, pair.colour_tolerance)

    guesses = [tuple(float(v) for v in np.median(flow[mask], axis=0)), track.motion]
    scores = []
    for guess in guesses:
        scores.append(kept(guess))
        if scores[-1] >= WELL_EXPLAINED or np.count_nonzero(mask) < 16:
            return guess
    radius = max(2, round(search * work_w))
    s_top, s_left = max(top - radius, 0), max(left - radius, 0)
    region = pair.current[s_top : top + mask.shape[0] + radius, s_left : left + mask.shape[1] + radius]
    mx, my = _best_match(region, look, mask)
    guesses.append(((s_left + mx - left) / sx, (s_top + my - top) / sy))
    scores.append(kept(guesses[-1]))
    return guesses[int(np.argmax(scores))]


def _best_match(region: np.ndarray, look: np.ndarray, mask: np.ndarray, coarse: int = 2) -> tuple[int, int]:
    """(x, y) in ``region`` where ``look`` (its ``mask`` pixels) fits best (least squared
    difference): searched at 1/``coarse`` size, then refined at full size around that."""
    h, w = mask.shape
    mask8 = mask.view(np.uint8)
    x, y = 0, 0
    if min(h, w) >= 4 * coarse:

        def shrink(a: np.ndarray) -> np.ndarray:
            return cv2.resize(a, (a.shape[1] // coarse, a.shape[0] // coarse), interpolation=cv2.INTER_AREA)

        score = cv2.matchTemplate(shrink(region), shrink(look), cv2.TM_SQDIFF, mask=shrink(mask.astype(np.float32)))
        _, _, (x, y), _ = cv2.minMaxLoc(score)
        x, y = max(x * coarse - coarse, 0), max(y * coarse - coarse, 0)
        region = region[y : y + h + 2 * coarse, x : x + w + 2 * coarse]
    score = cv2.matchTemplate(region, look, cv2.TM_SQDIFF, mask=mask8)
    _, _, (fx, fy), _ = cv2.minMaxLoc(score)
    return x + fx, y + fy


def _kept_colour(
    look: np.ndarray, mask: np.ndarray, image: np.ndarray, top: int, left: int, dx: float, dy: float, tolerance: float
) -> float:
    """Share of the ``mask`` pixels of ``look`` (placed at top, left) whose colour ``image``
    has ``(dx, dy)`` further on; pixels moved out of the frame count as kept (they left)."""
    h, w = mask.shape
    xs = np.broadcast_to(np.arange(left, left + w, dtype=np.float32)[None, :] + np.float32(dx), (h, w)).copy()
    ys = np.broadcast_to(np.arange(top, top + h, dtype=np.float32)[:, None] + np.float32(dy), (h, w)).copy()
    moved = cv2.remap(image, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    outside = (xs < 0) | (xs > image.shape[1] - 1) | (ys < 0) | (ys > image.shape[0] - 1)
    return float(((_same_colour(look, moved, tolerance) > 0) | outside)[mask].mean())


def _step(
    track: _Track, pair: _Pair, detected: np.ndarray | None, out: np.ndarray, cfg: OpticalFlowConfig
) -> tuple[_Track, float]:
    """Carry one object's mask into the current frame: writes it into ``out`` (H, W bool)
    and returns the new track and the object's confidence.

    Each pixel takes the previous mask where its own flow points if that flow is reliable,
    else where the object's overall move points if that explains its colour, else a faded
    share of the flow's answer."""
    steps = track.steps_since_agreement + 1
    if track.soft.size == 0:  # gone (left the frame): nothing to carry, nothing to agree with
        return replace(track, steps_since_agreement=steps), cfg.confidence_decay**steps
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
    dense = cv2.remap(
        track.soft,
        xs + backward[..., 0],
        ys + backward[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    move = np.float32([[1, 0, left - track.x0 - dx], [0, 1, top - track.y0 - dy]])
    rigid = cv2.warpAffine(
        track.soft,
        move,
        dense.shape[::-1],
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    reliable = backward[..., 2]
    explained = pair.move_explains(top, bottom, left, right, dx, dy)
    fallback = dense * np.float32(cfg.unreliable_keep)
    fallback += explained * (rigid - fallback)
    soft = fallback + reliable * (dense - fallback)
    trust = reliable + (1.0 - reliable) * explained
    if detected is not None:
        crop = detected[top:bottom, left:right]
        expected = np.stack([soft > 0.5, rigid > 0.5])  # the flow's answer, and the whole object moved
        if mask_iou(expected, crop[None]).max() >= cfg.agree_iou:
            weight = cfg.warp_weight_unreliable + (cfg.warp_weight - cfg.warp_weight_unreliable) * trust
            soft = weight * soft + (1.0 - weight) * crop
            steps = 0
    binary = _drop_small_parts(soft, track.min_part)
    if not binary.any():
        gone = replace(track, soft=np.zeros((0, 0), np.float32), steps_since_agreement=steps)
        return gone, cfg.confidence_decay**steps
    out[top:bottom, left:right] = binary
    confidence = float(trust[binary].mean()) * cfg.confidence_decay**steps
    return replace(_crop(soft, top, left, steps, track.min_part), motion=(dx, dy)), confidence


def _drop_small_parts(soft: np.ndarray, min_part: int) -> np.ndarray:
    """``soft > 0.5`` without its connected parts of fewer than ``min_part`` pixels, which
    are zeroed in ``soft`` too."""
    binary = soft > 0.5
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_part
    small[0] = False  # the background
    if small.any():
        drop = small[labels]
        soft[drop] = 0.0
        binary &= ~drop
    return binary


def _start(mask: np.ndarray, cfg: OpticalFlowConfig) -> _Track:
    min_part = max(cfg.min_area, math.ceil(cfg.min_part * np.count_nonzero(mask)), 1)
    return _crop(mask.astype(np.float32), 0, 0, 0, min_part)


def _crop(soft: np.ndarray, y0: int, x0: int, steps: int, min_part: int) -> _Track:
    """A track holding the support (soft > 0.5) of ``soft``, placed at (y0, x0), and a 1-pixel rim."""
    top, bottom, left, right = _box(soft > 0.5)
    if bottom == top:
        return _Track(np.zeros((0, 0), np.float32), y0, x0, steps, min_part)
    top, left = max(top - 1, 0), max(left - 1, 0)
    bottom, right = min(bottom + 1, soft.shape[0]), min(right + 1, soft.shape[1])
    return _Track(np.ascontiguousarray(soft[top:bottom, left:right]), y0 + top, x0 + left, steps, min_part)
