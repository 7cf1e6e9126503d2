"""Shot detection that understands anime.

Anime breaks frame-difference detectors: white/black flash frames and impact
frames that return to the same shot, fades and dissolves, camera shake, drawings
held for 2-3 frames (a spiky difference signal) and stills held for seconds.
The detector looks at each frame of a small analysis stream and keeps, per frame,
a few scalars; images are held only for a short window, so memory is bounded by
that window, never by the episode.

Change between two frames is the median of three measures that fail in different
ways (colour histogram, shift-tolerant structure, edge change ratio of the line
art; see :func:`evidence`). Per new drawing ``t`` (held frames reuse the features
of their drawing):

- **hard cut**: the change from ``t-1`` is large, replaces the line art or the
  colours, stands out from the changes of the drawings around ``t`` (a fast pan
  or a sweeping wing changes every drawing as much), and no frame shortly after
  ``t`` returns to a picture shortly before it: a flash, an impact frame or a
  smear returns; a cut does not.
- **gradual transition**: frame ``t`` is a convex blend of frames ``t-w`` and
  ``t+w`` (for a few ``w``) that are themselves different pictures. A dissolve
  is exactly that; so is each half of a fade through black. Camera moves and
  animation are not blends, so they do not count.

Runs of gradual evidence become one transition (a ``fade`` when it passes
through black, else a ``dissolve``) whose boundary is its middle frame, kept only
if the picture before it differs from the picture after it.

**The learned second opinion** (``learned``, :mod:`celmask.tasks.shots.learned`):
TransNetV2's per-frame cut probability, read from the same analysis frames, settles
the candidates the rules cannot (:func:`fuse`):

- a *cover*, a cut after which the earlier picture comes back within
  ``return_window`` frames, or an object wiping in and out (both its way in and its
  way out leave part of the picture in place): something passed in front of the
  camera, or a short insert; its cuts stand only when the model is sure of a cut
  both on the way in and on the way out;
- a cut that leaves part of the picture in place, or comes amid more big changes
  (a wing flapping across, fast action on ones), stands only when the model agrees;
- a change too small for the rules that stands out from its neighbours, or that
  replaces neither lines nor colours (a jump cut or cut-in within one set), becomes
  a cut when the model is confident.

Flash and hold rules keep the final word: a change that returns within
``flash_window`` frames, and a held frame, are never cuts, and the model adds no cut
of its own inside the rules' fades and dissolves. With ``auto`` on a CPU the model
reads only the windows around those candidates; on a GPU, and with ``always``, it
reads every frame and may also add cuts where the rules saw only an ordinary change.

>>> from celmask.tasks.shots.detect import detect_shots                    # doctest: +SKIP
>>> result = detect_shots("episode.mp4")                    # doctest: +SKIP
>>> [(s.start, s.end, s.transition) for s in result.shots]  # doctest: +SKIP
[(0, 118, 'start'), (118, 301, 'cut'), (301, 455, 'dissolve')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from celmask.tasks.core.types import Shot
from celmask.tasks.shots.holds import HoldConfig, block_change, drawing_ids, held_runs
from celmask.tasks.shots.learned import CutModel, CutProbability
from celmask.tasks.video import Frame, VideoInfo, iter_frames, probe

ANALYSIS_WIDTH = 160
"""Width of the analysis stream decoded by ffmpeg (height keeps the aspect)."""

SMALL_WIDTH = 48
"""Width of the tiny grey image used for structure and blend comparisons."""

EDGE_TOLERANCE = 3
"""Analysis pixels an edge may move between frames and still count as the same
line (3 px of a 160-px frame = 12 px at 640 wide: camera shake, small motion)."""

LEARNED_MODES = ("auto", "always", "never")
GPU_BATCH = 16
"""Windows the learned model reads at once on a GPU (one at a time on a CPU: no faster batched)."""

_EDGE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_TOLERANCE + 1, 2 * EDGE_TOLERANCE + 1))


@dataclass(frozen=True)
class ShotConfig:
    """Thresholds of the shot detector, documented in the README. The defaults were
    tuned on generated episodes of seeds 1-6; tests and ``bench/shots.py`` measure
    them on other seeds."""

    cut_threshold: float = 0.18
    """Dissimilarity (0-1) between consecutive frames above which a hard cut is considered."""
    same_threshold: float = 0.15
    """Dissimilarity below which two frames show the same picture (a flash returned)."""
    cut_min_line_change: float = 0.25
    """A hard cut replaces the line art (this share of edges is new) or, in frames
    with little line art, the colours (histogram distance); a dissolve's first frame does neither."""
    activity_ratio: float = 2.0
    """A cut changes this many times more than the new drawings around it do
    (a fast pan or a flapping wing changes every drawing as much)."""
    activity_window: int = 6
    """Frames either side whose changes make the local activity."""
    flash_window: int = 4
    """Frames a flash or impact frame may last and still return to its shot."""
    min_shot_frames: int = 8
    """Shorter shots are merged away; the weaker of two close boundaries goes."""
    blend_windows: tuple[int, ...] = (3, 6, 10, 15)
    """Half-widths ``w`` at which frame ``t`` is tested as a blend of ``t-w`` and ``t+w``."""
    blend_residual: float = 0.25
    """Largest blend residual (relative to the endpoints' difference) that counts as a blend."""
    blend_min_change: float = 0.04
    """Smallest shift-tolerant difference (0-1) between a blend's endpoints: they must be different pictures."""
    dark_luma: float = 24.0
    """Mean grey level under which a frame counts as black (fades pass through it)."""
    learned: str = "auto"
    """auto: TransNetV2 settles the candidates the rules cannot (on a CPU it reads only the
    frames around them; on a GPU every frame); always: it reads every frame; never: the rules alone."""
    return_window: int = 40
    """Frames within which the picture before a cut coming back (or a wipe going out again) makes a
    cover: an occlusion uncovering the same shot, or a short insert."""
    persist_share: float = 0.25
    """A cut across which this share of the picture's textured blocks stays may be an object wiping across."""
    weak_threshold: float = 0.07
    """Smallest change the model is asked about when it stands out from its neighbours (jump cuts, cut-ins)."""
    weak_ratio: float = 8.0
    """How many times more than its neighbours such a change must change."""
    learned_keep: float = 0.5
    """Cut probability at which a cut across a persisting picture, or amid more big changes, stands."""
    learned_return: float = 0.6
    """Cut probability the model must give both the way in and the way out for a returning picture to be two cuts."""
    learned_add: float = 0.5
    """Cut probability at which a change the rules missed becomes a cut."""
    learned_confident: float = 0.75
    """Cut probability at which any new drawing becomes a cut, when the model reads every frame."""
    analysis_width: int = ANALYSIS_WIDTH
    hold: HoldConfig = field(default_factory=HoldConfig)

    def __post_init__(self) -> None:
        for name in ("cut_threshold", "same_threshold", "cut_min_line_change", "blend_residual", "blend_min_change"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"shot config: {name} must be in (0, 1], got {value}")
        if self.same_threshold >= self.cut_threshold:
            raise ValueError(
                f"shot config: same_threshold ({self.same_threshold}) must be below cut_threshold ({self.cut_threshold})"
            )
        if self.flash_window < 1 or self.min_shot_frames < 1:
            raise ValueError("shot config: flash_window and min_shot_frames must be >= 1")
        if not self.blend_windows or min(self.blend_windows) < 1:
            raise ValueError(f"shot config: blend_windows must be positive, got {self.blend_windows}")
        if self.analysis_width < SMALL_WIDTH:
            raise ValueError(f"shot config: analysis_width must be >= {SMALL_WIDTH}, got {self.analysis_width}")
        if self.learned not in LEARNED_MODES:
            raise ValueError(f"shot config: learned must be one of {', '.join(LEARNED_MODES)}, got {self.learned!r}")
        for name in (
            "persist_share",
            "weak_threshold",
            "learned_keep",
            "learned_return",
            "learned_add",
            "learned_confident",
        ):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"shot config: {name} must be in (0, 1], got {getattr(self, name)}")
        if self.return_window <= self.flash_window:
            raise ValueError(
                f"shot config: return_window ({self.return_window}) must exceed flash_window ({self.flash_window})"
            )


@dataclass
class _Features:
    """What the detector keeps of one analysis frame."""

    small: np.ndarray
    """Tiny grey image (h, SMALL_WIDTH) float32, 0-255."""
    hist: np.ndarray
    """HSV colour histogram (128,) float32 summing to 1."""
    grey: np.ndarray
    """Analysis-size grey image (H, W) uint8, for held-frame detection."""
    grey_f: np.ndarray
    """``grey`` as float32, for blend fits (sharp enough that a zoom is no blend)."""
    edges: np.ndarray
    """Canny edges of ``grey`` (H, W) bool."""
    near_edges: np.ndarray
    """``edges`` dilated by EDGE_TOLERANCE pixels (H, W) bool: where an edge may move under shake."""
    luma: float


@dataclass
class _Candidate:
    """A new drawing that changed enough to be looked at, and what the rules make of it."""

    frame: int
    step: float
    ratio: float
    """How many times more than the new drawings around it it changed (inf: none around)."""
    tier: str
    """"cut" (the rules' cut), "flash" (returns at once: never a cut), "weak" (stands out,
    too small for the rules) or "change" (neither: only a model reading every frame may make it a cut)."""
    doubt: str = ""
    """Why the rules' cut needs the model: "persist" (part of the picture stayed), "burst" (more
    big changes within ``flash_window``), "cover" (in a stretch that may be one shot covered
    for a while); "" when it does not."""


@dataclass(frozen=True)
class ShotResult:
    """Everything the low-res pass learns about an episode."""

    shots: list[Shot]
    times: np.ndarray
    """(n,) float64 presentation time of every frame."""
    held: np.ndarray
    """(n,) bool: frame shows the same drawing as the previous frame."""
    frame_count: int
    cut_probability: np.ndarray | None = None
    """(n,) float32 learned probability of a cut right after each frame; NaN where it was not read; None: never."""
    learned: dict = field(default_factory=dict)
    """What the learned model did: mode, model id, device, windows and frames it read (empty: never)."""

    @property
    def drawing_ids(self) -> np.ndarray:
        return drawing_ids(self.held)

    @property
    def holds(self) -> list[tuple[int, int]]:
        return held_runs(self.held)


def features(rgb: np.ndarray, grey: np.ndarray | None = None) -> _Features:
    """Compute the detector's features of one RGB analysis frame (H, W, 3) uint8
    (``grey``: its grey version, when already computed)."""
    if grey is None:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    small_h = max(4, round(SMALL_WIDTH * h / w))
    small = cv2.resize(grey, (SMALL_WIDTH, small_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    hsv = cv2.cvtColor(rgb[::2, ::2], cv2.COLOR_RGB2HSV)  # colour statistics need no detail
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    hist /= max(float(hist.sum()), 1.0)
    edges = cv2.Canny(grey, 60, 140)
    near = cv2.dilate(edges, _EDGE_KERNEL)
    return _Features(
        small=small,
        hist=hist,
        grey=grey,
        grey_f=grey.astype(np.float32),
        edges=edges > 0,
        near_edges=near > 0,
        luma=float(small.mean()),
    )


def _overlap(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of two same-size images that overlap when ``b`` is moved by (dy, dx)."""
    h, w = a.shape[:2]
    return (
        a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)],
        b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)],
    )


def structure_change(a: np.ndarray, b: np.ndarray, shift: int = 2) -> tuple[float, tuple[int, int]]:
    """Mean absolute difference (0-1) of two tiny grey images (float32) at their
    best alignment within ``shift`` pixels, so camera shake and pans do not count;
    also returns that alignment (dy, dx), ``b`` moved against ``a``."""
    h, w = a.shape
    # One template match scores every shift: b's centre against a.
    scores = cv2.matchTemplate(a, b[shift : h - shift, shift : w - shift], cv2.TM_SQDIFF)
    _, _, (x, y), _ = cv2.minMaxLoc(scores)
    dy, dx = y - shift, x - shift
    pa, pb = _overlap(a, b, dy, dx)
    return cv2.norm(pa, pb, cv2.NORM_L1) / (pa.size * 255.0), (dy, dx)


def edge_change(a: _Features, b: _Features, offset: tuple[int, int] = (0, 0)) -> float:
    """Edge change ratio (0-1) with ``b`` moved by ``offset`` (analysis pixels):
    the larger share of either frame's edges that lie far from every edge of the
    other. Line art moves only where characters move; after a cut nearly every
    line is new."""
    ea, eb = _overlap(a.edges, b.edges, *offset)
    na_, nb_ = _overlap(a.near_edges, b.near_edges, *offset)
    na, nb = int(ea.sum()), int(eb.sum())
    if na == 0 and nb == 0:
        return 0.0
    entering = int((eb & ~na_).sum()) / max(nb, 1)
    leaving = int((ea & ~nb_).sum()) / max(na, 1)
    return max(entering, leaving)


def evidence(a: _Features, b: _Features) -> tuple[float, float, float]:
    """Three kinds of change between two frames, each 0-1, that fail in different
    ways: colour histogram distance (blind to a cut within one set), shift-tolerant
    structure change (fooled by big motion or a camera move past its search range,
    and by a fade's change of brightness) and the edge change ratio at the same
    alignment (fooled by flat, edgeless frames)."""
    hist = 0.5 * float(np.abs(a.hist - b.hist).sum())
    structure, (dy, dx) = structure_change(a.small, b.small)
    scale = a.grey.shape[1] / a.small.shape[1]
    edges = edge_change(a, b, (round(dy * scale), round(dx * scale)))
    return hist, min(1.0, 4.0 * structure), edges


def dissimilarity(a: _Features, b: _Features) -> float:
    """How different two frames' pictures are, 0 (same) to 1: the median of the
    three kinds of :func:`evidence`. Any one may be wrong; two rarely are."""
    return sorted(evidence(a, b))[1]


WIPE_GRID = (3, 4)
"""Rows and columns of the blocks :func:`is_wipe` fits a blend to one by one."""


def is_wipe(before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> bool:
    """Whether ``middle`` (float32 grey, like its neighbours) shows ``before`` in some places
    and ``after`` in others rather than a mix of both everywhere: most blocks where the two
    differ fit as pure ``before`` or pure ``after`` (a dissolve or fade mixes every block alike)."""
    h, w = before.shape
    rows, cols = WIPE_GRID
    pure = mixed = 0
    for r in range(rows):
        for c in range(cols):
            ys, xs = slice(r * h // rows, (r + 1) * h // rows), slice(c * w // cols, (c + 1) * w // cols)
            d = (after[ys, xs] - before[ys, xs]).ravel()
            dd = float(d @ d)
            if dd < 64.0 * d.size:  # under 8 grey levels apart: no say
                continue
            a = float((middle[ys, xs] - before[ys, xs]).ravel() @ d) / dd
            pure += a < 0.1 or a > 0.9
            mixed += 0.1 <= a <= 0.9
    return pure > 0 and pure >= 1.5 * mixed


def blend_residual(before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """Fit ``middle ≈ (1-a)·before + a·after`` (float32 images); return (residual, a).

    The residual is relative to the endpoints' difference, so 0 means a perfect
    blend and 1 means no better than either endpoint alone.
    """
    d = cv2.subtract(after, before).ravel()
    m = cv2.subtract(middle, before).ravel()
    dd = float(d @ d)
    if dd <= 1e-6:
        return 1.0, 0.0
    a = float(np.clip((m @ d) / dd, 0.0, 1.0))
    residual = cv2.norm(m, d * a, cv2.NORM_L1) / max(cv2.norm(d, cv2.NORM_L1), 1e-6)
    return residual, a


@dataclass
class _GradualRun:
    """An open run of frames that look like a blend (or the black middle of a fade)."""

    first: int
    last: int
    reach_before: int
    """Half-width of the blend that opened the run: the transition began that much earlier."""
    reach_after: int
    darkest: float
    before: _Features
    """A frame safely before the run, to check that the picture really changed."""


class ShotDetector:
    """Streaming detector: feed analysis frames in order with :meth:`push`, then
    :meth:`finish` to get the shots. Holds a window of recent frames only.

    ``model``: the learned model to ask (default: TransNetV2 on this machine's GPU, else
    its CPU, loaded when first needed); unused with ``learned="never"``.
    """

    def __init__(self, config: ShotConfig | None = None, model: CutModel | None = None) -> None:
        self.config = cfg = config or ShotConfig()
        self._reach = max(cfg.blend_windows)
        self._lookahead = max(self._reach, cfg.return_window) + 1
        self._window: deque[_Features] = deque(maxlen=2 * self._lookahead + 2)
        self._first = 0  # frame index of self._window[0]
        self._times: list[float] = []
        self._held: list[bool] = []
        self._step: list[float] = []  # dissimilarity to the previous frame
        self._candidates: list[_Candidate] = []
        self._covers: list[tuple[int, int]] = []  # (first cut, last frame) of stretches that may be one shot covered
        self._gradual: list[tuple[int, int, str]] = []  # (span start, span end, kind)
        self._run: _GradualRun | None = None
        self._next_eval = 0
        self._model = model
        self._learned: CutProbability | None = None
        self._device = ""
        if cfg.learned != "never":
            from celmask.models import transnetv2

            self._device = model.device if model is not None else transnetv2.default_device()
            self._model_id = model.id if model is not None else transnetv2.model_id()
            on_cpu = self._device == "cpu"
            self._learned = CutProbability(
                self._predict, every_frame=cfg.learned == "always" or not on_cpu, batch=1 if on_cpu else GPU_BATCH
            )

    def _predict(self, windows: np.ndarray) -> np.ndarray:
        if self._model is None:  # first needed now: a run whose rules are sure never loads it
            from celmask.models.transnetv2 import shared_model

            self._model = shared_model(self._device)
        return self._model.predict(windows)

    def push(self, time: float, rgb: np.ndarray) -> None:
        """Add the next frame (RGB analysis image) in presentation order.

        A held frame (the previous drawing again, up to codec noise) reuses the
        drawing's features: anime holds most drawings for 2-3 frames, so this
        halves the work. Comparing with the drawing's first frame, not the last
        one, also keeps a slow drift from hiding as a chain of holds.
        """
        n = len(self._times)
        if self._learned is not None:
            self._learned.push(rgb)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        prev = self._window[-1] if self._window else None
        if prev is not None and block_change(prev.grey, grey, self.config.hold.block) <= self.config.hold.threshold:
            f, held, step = prev, True, 0.0
        else:
            f, held = features(rgb, grey), False
            step = dissimilarity(prev, f) if prev is not None else 0.0
        self._step.append(step)
        self._held.append(held)
        if len(self._window) == self._window.maxlen:
            self._first += 1
        self._window.append(f)
        self._times.append(time)
        while self._next_eval <= n - self._lookahead:  # lookahead complete
            self._evaluate(self._next_eval, last=n)
            self._next_eval += 1

    def finish(self) -> ShotResult:
        """Evaluate the remaining frames and turn the evidence into shots."""
        n = len(self._times)
        while self._next_eval < n:
            self._evaluate(self._next_eval, last=n - 1)
            self._next_eval += 1
        self._close_run(n - 1)
        times = np.asarray(self._times, dtype=np.float64)
        probability = self._learned.finish() if self._learned is not None else None
        cuts, gradual = fuse(self._candidates, self._covers, self._gradual, probability, self.config)
        shots = _choose_boundaries(cuts, gradual, times, self.config)
        learned = {}
        if self._learned is not None:
            assert probability is not None
            learned = {
                "mode": self.config.learned,
                "model": self._model_id,
                "device": self._device,
                "windows": self._learned.windows_scored,
                "frames": int(np.count_nonzero(~np.isnan(probability))),
            }
        return ShotResult(
            shots=shots,
            times=times,
            held=np.asarray(self._held, dtype=bool),
            frame_count=n,
            cut_probability=probability,
            learned=learned,
        )

    def _at(self, index: int) -> _Features | None:
        pos = index - self._first
        return self._window[pos] if 0 <= pos < len(self._window) else None

    def _evaluate(self, t: int, last: int) -> None:
        candidate = self._classify(t, last)
        if candidate is not None:
            self._candidates.append(candidate)
            if self._learned is not None and (candidate.doubt or candidate.tier == "weak"):
                self._learned.request(t - 1, t)
        middle = self._at(t)
        assert middle is not None  # the window always covers the frame under evaluation
        reach = self._blend_reach(t, middle)
        if reach or (self._run is not None and middle.luma < self.config.dark_luma):
            if self._run is None:
                before = self._at(max(0, t - self._reach - 1)) or self._window[0]
                self._run = _GradualRun(t, t, reach, reach, middle.luma, before)
            self._run.last = t
            self._run.reach_after = reach or self._run.reach_after
            self._run.darkest = min(self._run.darkest, middle.luma)
        elif self._run is not None and t - self._run.last > min(self.config.blend_windows):
            self._close_run(last)

    def _blend_reach(self, t: int, middle: _Features) -> int:
        """The smallest ``w`` such that frame ``t`` is a blend of two different
        pictures ``w`` frames either side; 0 if there is none."""
        cfg = self.config
        if self._held[t] and t + 1 < len(self._held) and self._held[t + 1]:
            return 0  # the middle of a hold: every frame of a blend changes
        for w in cfg.blend_windows:
            before, after = self._at(t - w), self._at(t + w)
            if before is None or after is None:
                continue
            # Cheapest tests first. Downscaling is linear, so a blend stays a blend
            # on the tiny image (a loose bound there rejects most frames); the
            # analysis size then rejects zooms and slow pans, which blur into
            # blends when tiny; the endpoints must differ even at their best alignment
            # (a pan aligns away); and the whole picture must be mixed alike (an
            # object wiping across is one picture here and the other there).
            residual, a = blend_residual(before.small, middle.small, after.small)
            if residual > 1.5 * cfg.blend_residual or not 0.15 <= a <= 0.85:
                continue
            residual, a = blend_residual(before.grey_f, middle.grey_f, after.grey_f)
            if (
                residual <= cfg.blend_residual
                and 0.15 <= a <= 0.85
                and structure_change(before.small, after.small)[0] >= cfg.blend_min_change
                and not is_wipe(before.small, middle.small, after.small)
            ):
                return w
        return 0

    def _close_run(self, last: int) -> None:
        """Turn the open run into a transition if it is long enough and the picture changed."""
        run, self._run = self._run, None
        if run is None or run.last - run.first < 1:
            return
        after = self._at(min(last, run.last + self._reach + 1))
        if after is None or dissimilarity(run.before, after) < self.config.same_threshold:
            return  # the picture came back: a lighting change or a flash, not a new shot
        kind = "fade" if run.darkest < self.config.dark_luma else "dissolve"
        lo, hi = max(0, run.first - run.reach_before), min(len(self._times), run.last + run.reach_after + 1)
        if self._gradual and lo <= self._gradual[-1][1]:  # a pause in the evidence, one transition
            lo, _, prev_kind = self._gradual.pop()
            kind = "fade" if "fade" in (kind, prev_kind) else kind
        self._gradual.append((lo, hi, kind))
        if kind == "dissolve" and self._learned is not None:
            self._learned.request(lo, hi - 1)  # a dissolve needs the model's agreement: a wipe can look like one

    def _classify(self, t: int, last: int) -> _Candidate | None:
        """What the rules make of the change at ``t`` (None: too small to matter).

        A big change is a cut unless the picture returns: some frame shortly after ``t``
        matches some frame shortly before it (a flash or impact frame of at most
        ``flash_window`` frames went out and back), or every drawing around changes as
        much (fast motion), or it replaces neither line art nor colours (a blend begins).
        A cut is in doubt when part of the picture stays across it (``persist_share``:
        something wiping across), and it is part of a *cover* when the earlier picture
        comes back (within ``return_window``) or a later cut keeps part of the picture too:
        one shot covered for a while, or a short insert."""
        cfg = self.config
        step = self._step[t]
        if t == 0 or self._held[t] or step < cfg.weak_threshold:
            return None
        # Activity: the changes of the new drawings around t that are no cut candidates themselves.
        around = [
            other
            for i in range(max(1, t - cfg.activity_window), min(last, t + cfg.activity_window) + 1)
            if i != t and not self._held[i] and (other := self._step[i]) < cfg.cut_threshold
        ]
        ratio = step / max(float(np.mean(around)), 1e-6) if around else float("inf")
        every = self._learned is not None and self._learned.every_frame
        change = _Candidate(t, step, ratio, "change") if every else None
        stands_out = ratio >= cfg.activity_ratio
        if step < cfg.cut_threshold:
            return _Candidate(t, step, ratio, "weak") if ratio >= cfg.weak_ratio else change
        before, now = self._at(t - 1), self._at(t)
        if not stands_out or before is None or now is None:
            return change  # no more change than its neighbours: fast motion, not a cut
        if max(evidence(before, now)[0], edge_change(before, now)) < cfg.cut_min_line_change:
            # Neither the line art nor the colours were replaced: a blend begins, or a jump
            # within the same set.
            return _Candidate(t, step, ratio, "weak")
        k = cfg.flash_window
        for i in range(t - 1, t - k - 2, -1):
            earlier = self._at(i)
            if earlier is None:
                break
            for j in range(t, min(i + k + 2, last + 1)):
                later = self._at(j)
                if later is not None and _same(earlier, later, cfg.same_threshold):
                    return _Candidate(t, step, ratio, "flash")
        if self._in_cover(t):
            return _Candidate(t, step, ratio, "cut", "cover")  # on the way out of a cover found earlier
        for j in range(t + k + 1, min(t + cfg.return_window, last) + 1):
            later = self._at(j)
            if later is not None and not self._held[j] and _identical(before, later, cfg.same_threshold):
                self._covers.append((t, j))  # the picture before t came back at j
                return _Candidate(t, step, ratio, "cut", "cover")
        if persistence(before.grey_f, now.grey_f) < cfg.persist_share:
            # Other big changes right before or after: a wing flapping across, fast action
            # on ones; an edit's cut is followed by a shot.
            burst = any(
                self._step[j] >= cfg.cut_threshold and not self._held[j]
                for j in range(max(1, t - k), min(last, t + k) + 1)
                if j != t
            )
            return _Candidate(t, step, ratio, "cut", "burst" if burst else "")
        # Part of the picture stayed: something wiping across. If its way in was such a
        # cut too, everything since was covered.
        for i in range(len(self._candidates) - 1, -1, -1):
            way_in = self._candidates[i]
            if way_in.frame < t - cfg.return_window:
                break
            if way_in.doubt == "persist":
                self._covers.append((way_in.frame, t))
                for inner in self._candidates[i:]:
                    if inner.tier == "cut":
                        inner.doubt = "cover"
                        if self._learned is not None:
                            self._learned.request(inner.frame - 1, inner.frame)
                return _Candidate(t, step, ratio, "cut", "cover")
        return _Candidate(t, step, ratio, "cut", "persist")

    def _in_cover(self, t: int) -> bool:
        """Whether ``t`` lies in a cover found so far (or just after its end)."""
        for first, back in reversed(self._covers):
            if first <= t <= back + self.config.flash_window:
                return True
            if back + self.config.return_window < t:
                return False  # covers are in order: the earlier ones ended earlier still
        return False


def _same(a: _Features, b: _Features, threshold: float) -> bool:
    """``dissimilarity(a, b) < threshold``, skipping the edge measure when the other two settle it."""
    hist = 0.5 * float(np.abs(a.hist - b.hist).sum())
    structure = min(1.0, 4.0 * structure_change(a.small, b.small)[0])
    if hist >= threshold and structure >= threshold:
        return False
    if hist < threshold and structure < threshold:
        return True
    return dissimilarity(a, b) < threshold


RETURN_SHIFT = 6
"""Tiny-image pixels (of 48) a returning picture may have moved: the camera went on panning behind the cover."""


def _identical(a: _Features, b: _Features, threshold: float) -> bool:
    """All three kinds of change below ``threshold`` at the best alignment within
    :data:`RETURN_SHIFT`: the same picture, stricter than :func:`_same` (a later shot of
    the same set shares its colours and often its layout)."""
    if 0.5 * float(np.abs(a.hist - b.hist).sum()) >= threshold:
        return False
    structure, (dy, dx) = structure_change(a.small, b.small, RETURN_SHIFT)
    if 4.0 * structure >= threshold:
        return False
    scale = a.grey.shape[1] / a.small.shape[1]
    return edge_change(a, b, (round(dy * scale), round(dx * scale))) < threshold


PERSIST_BLOCK = (16, 15)
"""Blocks (analysis pixels) whose survival :func:`persistence` counts."""
PERSIST_SHIFT = 4
"""Analysis pixels a block may move and still count as kept (camera shake, a slow pan)."""


def persistence(a: np.ndarray, b: np.ndarray, texture: float = 6.0, tolerance: float = 6.0) -> float:
    """Share (0-1) of the textured blocks of grey image ``a`` (float32, analysis size) that
    ``b`` still shows near the same place: an object wiping across the frame leaves the
    rest of the picture in place, a cut keeps next to none (on the generated episodes at
    most 0.15). Flat blocks match anything and do not count."""
    h, w = a.shape
    (bw, bh), r = PERSIST_BLOCK, PERSIST_SHIFT
    kept = total = 0
    for y in range(0, h - bh + 1, bh):
        for x in range(0, w - bw + 1, bw):
            block = a[y : y + bh, x : x + bw]
            if float(block.std()) < texture:
                continue
            total += 1
            area = b[max(0, y - r) : min(h, y + bh + r), max(0, x - r) : min(w, x + bw + r)]
            kept += float(cv2.matchTemplate(area, block, cv2.TM_SQDIFF).min()) < tolerance**2 * block.size
    return kept / total if total else 0.0


def fuse(
    candidates: list[_Candidate],
    covers: list[tuple[int, int]],
    gradual: list[tuple[int, int, str]],
    probability: np.ndarray | None,
    cfg: ShotConfig,
) -> tuple[list[tuple[int, float]], list[tuple[int, int, str]]]:
    """The hard cuts, (frame, strength), and the gradual transitions, (span start, end,
    kind), from the rules' candidates and the learned cut probability (None: the rules
    alone; NaN where unread: the rules decide there).

    A cover (a stretch that may be one shot covered for a while) keeps its cuts only
    when the model is sure (``learned_return``) of a cut both on the way in and on the
    way out, as at a short insert; otherwise something passed in front of the camera
    and nothing inside is a cut, nor a blend it overlaps (a wipe half way looks like
    one). A dissolve, a cut across a persisting picture and a cut in a burst need
    ``learned_keep`` somewhere in their span (a fade passes through black: it stands); a
    weak change becomes a cut at ``learned_add``, any other change (read on every
    frame) at ``learned_confident``, but none next to a flash or inside a blend.
    """
    if probability is None:
        return [(c.frame, c.step) for c in candidates if c.tier == "cut"], gradual

    def score(frames: list[int]) -> float:
        """The model's strongest cut probability at ``frames`` (NaN: unread). TransNetV2
        marks the last frame before a cut, so the frame before each counts too."""
        values = [v for t in frames for v in probability[max(0, t - 1) : t + 1] if not np.isnan(v)]
        return max(values) if values else np.nan

    def sure(value: float, threshold: float) -> bool:
        """The model says cut, or has no opinion (the rules' cut stands)."""
        return bool(np.isnan(value) or value >= threshold)

    occlusions = []
    for first, back in covers:
        members = [c.frame for c in candidates if c.doubt == "cover" and first <= c.frame <= back + cfg.flash_window]
        middle = (first + back) / 2
        ways = [[t for t in members if t < middle], [t for t in members if t >= middle]]
        if not all(way and sure(score(way), cfg.learned_return) for way in ways):
            occlusions.append((first, back + cfg.flash_window))
    blends = [
        (lo, hi, kind)
        for lo, hi, kind in gradual
        if not any(lo <= end and start < hi for start, end in occlusions)
        and (kind != "dissolve" or sure(score(list(range(lo + 1, hi + 1))), cfg.learned_keep))
    ]
    # The model also fires along fades and dissolves and next to flashes: the rules' own
    # finds there; it adds no cut of its own near them.
    k = cfg.flash_window
    busy = [(lo - k, hi + k) for lo, hi, _ in blends] + [
        (c.frame - k, c.frame + k) for c in candidates if c.tier == "flash"
    ]
    cuts = []
    for c in candidates:
        if c.tier == "flash" or any(lo <= c.frame <= hi for lo, hi in occlusions):
            continue
        if c.tier == "cut":
            keep = c.doubt not in ("persist", "burst") or sure(score([c.frame]), cfg.learned_keep)
        else:
            value = score([c.frame])
            keep = (
                not np.isnan(value)
                and value >= (cfg.learned_add if c.tier == "weak" else cfg.learned_confident)
                and not any(lo <= c.frame <= hi for lo, hi in busy)
            )
        if keep:
            cuts.append((c.frame, c.step))
    return cuts, blends


def _choose_boundaries(
    cuts: list[tuple[int, float]], gradual: list[tuple[int, int, str]], times: np.ndarray, cfg: ShotConfig
) -> list[Shot]:
    """Merge cut and gradual evidence into shots no shorter than ``min_shot_frames``."""
    n = len(times)
    if n == 0:
        return []
    inside = np.zeros(n, dtype=bool)
    candidates: list[tuple[int, float, str, int, int]] = []  # (frame, strength, kind, span)
    for lo, hi, kind in gradual:
        inside[lo:hi] = True
        candidates.append(((lo + hi) // 2, 2.0, kind, lo, hi))
    candidates += [(t, strength, "cut", t, t) for t, strength in cuts if not inside[t]]
    candidates.sort()
    kept: list[tuple[int, float, str, int, int]] = []
    for cand in candidates:
        if cand[0] < cfg.min_shot_frames or n - cand[0] < cfg.min_shot_frames:
            continue
        if kept and cand[0] - kept[-1][0] < cfg.min_shot_frames:
            if cand[1] > kept[-1][1]:
                kept[-1] = cand  # of two boundaries too close, keep the stronger
            continue
        kept.append(cand)
    return make_shots([c[0] for c in kept], [c[2] for c in kept], [(c[3], c[4]) for c in kept], times)


def make_shots(
    boundaries: list[int], transitions: list[str], spans: list[tuple[int, int]], times: np.ndarray
) -> list[Shot]:
    """Shots tiling ``[0, len(times))`` from sorted boundary frames (the first frame
    of every shot after the first) and the transition that starts each."""
    n = len(times)
    frame_time = float(np.median(np.diff(times))) if n > 1 else 0.0
    starts = [0, *boundaries]
    ends = [*boundaries, n]
    kinds = ["start", *transitions]
    spans = [(0, 0), *spans]

    def at(i: int) -> float:
        return float(times[i]) if i < n else float(times[-1]) + frame_time

    return [
        Shot(
            index=i,
            start=s,
            end=e,
            start_time=at(s),
            end_time=at(e),
            transition=k,
            transition_start=sp[0] if k in ("fade", "dissolve") else s,
            transition_end=sp[1] if k in ("fade", "dissolve") else s,
        )
        for i, (s, e, k, sp) in enumerate(zip(starts, ends, kinds, spans))
    ]


def detect_frames(
    frames: Iterable[Frame], config: ShotConfig | None = None, model: CutModel | None = None
) -> ShotResult:
    """Run the detector over analysis frames (RGB, in presentation order); ``model`` as for :class:`ShotDetector`."""
    detector = ShotDetector(config, model)
    for frame in frames:
        detector.push(frame.time, frame.image)
    return detector.finish()


def detect_shots(
    video: str | Path,
    config: ShotConfig | None = None,
    *,
    info: VideoInfo | None = None,
    on_frame: Callable[[int], None] | None = None,
    model: CutModel | None = None,
) -> ShotResult:
    """Decode ``video`` at analysis width and detect its shots and held frames (the
    learned model reads the same frames: one decode).

    ``on_frame(index)`` is called after each frame (for progress bars).
    """
    config = config or ShotConfig()
    info = info or probe(video)
    width = max(SMALL_WIDTH, min(config.analysis_width, info.width))

    def frames() -> Iterator[Frame]:
        for frame in iter_frames(video, width=width, deblock=False):
            yield frame
            if on_frame is not None:
                on_frame(frame.index)

    return detect_frames(frames(), config, model)
