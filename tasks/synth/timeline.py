"""The plan of a synthetic episode: shots, transitions, drawings, camera, characters.

:func:`plan_timeline` turns a seed into plain frozen dataclasses that say, for every
frame, what is on screen: which shot(s), which drawing, where the camera looks,
where each character stands and in which pose, which flash and which subtitle.
Rendering (:mod:`celmask.tasks.synth.render`) only executes this plan, so the plan is also
the place to read the generator's rules:

- shots 0.5-10 s, grouped into scenes that share a painted set and a cast;
- transitions: hard cut, fade through black (6-18 out, 0-6 black, 6-18 in) or
  cross-dissolve (8-30 frames); the boundary is the middle frame of the span;
- animation on 2s / 3s / mixed (drawings held 2-3 frames), still shots (one drawing,
  no camera move), and held stretches of 1-3 s inside shots; the camera moves on
  1s (every frame differs) or with the drawings;
- flashes (white, black, strong whitening), 1-2 frames, at least 8 frames from any
  shot boundary or transition span;
- subtitles on some shots, changing mid-shot;
- with ``hard_cases``, the editing that fools shot detectors
  (:mod:`celmask.tasks.synth.edits`): cut-ins, cut-outs and jump cuts within a set,
  occlusions that uncover the same shot, background switches behind close-ups.

How each shot is staged (drawings, camera, characters) is :mod:`celmask.tasks.synth.staging`.
Frame numbers are episode frames unless a name says ``local`` (relative to the
shot's ``content_start``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from celmask.tasks.synth.backgrounds import SetDesign, random_set
from celmask.tasks.synth.characters import CharacterDesign, EpisodeStyle, random_design, random_style
from celmask.tasks.synth.edits import (
    BACKDROPS,
    BackgroundSwitch,
    Occlusion,
    choose_edits,
    derive_shot,
    plan_occlusion,
    plan_switch,
)
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.staging import (
    CameraState,
    CharacterPlan,
    effective_time,
    plan_drawings,
    stage_camera,
    stage_characters,
)

TRANSITIONS = ("start", "cut", "fade", "dissolve")
SHOT_KINDS = ("empty", "wide", "full", "medium", "closeup")
TIMINGS = ("2s", "3s", "mixed", "still")
FLASH_KINDS = ("white", "black", "whiten")

MIN_SHOT_SECONDS = 0.5
MAX_SHOT_SECONDS = 10.0
FLASH_MARGIN = 8
"""Flashes keep at least this many frames from shot boundaries and transition spans."""
SET_SCALE = (2.0, 1.5)
"""Painted sets are this many frame widths / heights, so the camera can pan and zoom."""


@dataclass(frozen=True)
class Transition:
    """The transition that starts a shot. ``span`` is half-open; empty for start/cut."""

    kind: str
    span: tuple[int, int]
    fade_out: int = 0
    black: int = 0
    fade_in: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TRANSITIONS:
            raise ValueError(f"transition kind must be one of {TRANSITIONS}, got {self.kind!r}")
        if self.kind == "fade" and self.fade_out + self.black + self.fade_in != self.span[1] - self.span[0]:
            raise ValueError(f"fade parts {self.fade_out}+{self.black}+{self.fade_in} do not fill span {self.span}")


@dataclass(frozen=True)
class Flash:
    frame: int
    kind: str


@dataclass(frozen=True)
class Subtitle:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class ShotPlan:
    index: int
    start: int
    end: int
    transition: Transition
    content_start: int
    content_end: int
    """Frames ``[content_start, content_end)`` show this shot's picture (transitions overlap)."""
    set_id: int
    kind: str
    timing: str
    camera_move: str
    camera_on_ones: bool
    drawings: tuple[int, ...]
    """Local frame at which each drawing starts; the first is 0."""
    still_spans: tuple[tuple[int, int], ...]
    """Local half-open spans where one drawing is held and the camera does not move."""
    camera: tuple[CameraState, ...]
    """One per local frame."""
    characters: tuple[CharacterPlan, ...]
    """Back to front (paint order)."""
    subtitles: tuple[Subtitle, ...]
    flashes: tuple[Flash, ...]
    edit: str = ""
    """How it continues the shot before (``hard_cases``): "cut-in", "cut-out", "jump" or ""."""
    occlusion: Occlusion | None = None
    switch: BackgroundSwitch | None = None

    def drawing_at(self, frame: int) -> int:
        """Drawing number shown at episode ``frame`` (must lie in the content range)."""
        return bisect.bisect_right(self.drawings, frame - self.content_start) - 1


@dataclass(frozen=True)
class EpisodePlan:
    seed: int
    width: int
    height: int
    fps: Fraction
    frame_count: int
    style: EpisodeStyle
    cast: tuple[CharacterDesign, ...]
    sets: tuple[SetDesign, ...]
    shots: tuple[ShotPlan, ...]
    hard_cases: bool = False

    def shot_at(self, frame: int) -> int:
        """Index of the shot that owns ``frame``."""
        return bisect.bisect_right(self.shots, frame, key=lambda s: s.start) - 1


# --------------------------------------------------------------------------- helpers


def layers_at(plan: EpisodePlan, frame: int) -> list[tuple[int, float]]:
    """Which shots' pictures make up ``frame``, with blend weights (empty: black).

    Cuts and plain frames: one shot at weight 1. Dissolves: both shots, linear cross
    blend. Fades: the outgoing shot dimming, black, the incoming shot brightening.
    """
    k = plan.shot_at(frame)
    out = []
    for j in (k - 1, k, k + 1):
        if not 0 <= j < len(plan.shots):
            continue
        s = plan.shots[j]
        if not s.content_start <= frame < s.content_end:
            continue
        out.append((j, _weight(plan, j, frame)))
    return out


def _weight(plan: EpisodePlan, j: int, frame: int) -> float:
    s = plan.shots[j]
    tin = s.transition
    if tin.kind in ("fade", "dissolve") and tin.span[0] <= frame < tin.span[1]:
        if tin.kind == "dissolve":
            n = tin.span[1] - tin.span[0]
            return (frame - tin.span[0] + 1) / (n + 1)
        k = frame - (tin.span[0] + tin.fade_out + tin.black)
        return (k + 1) / (tin.fade_in + 1)
    if j + 1 < len(plan.shots):
        tout = plan.shots[j + 1].transition
        if tout.kind in ("fade", "dissolve") and tout.span[0] <= frame < tout.span[1]:
            k = frame - tout.span[0]
            if tout.kind == "dissolve":
                return 1.0 - (k + 1) / (tout.span[1] - tout.span[0] + 1)
            return 1.0 - (k + 1) / (tout.fade_out + 1)
    return 1.0


_SYLLABLES = (
    "ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no ha hi fu he ho "
    "ma mi mu me mo ya yu yo ra ri ru re ro wa n ga gi go za ji da de do ba bi bu be bo"
).split()
_ENDINGS = ("", "", "", "!", "?", "...", "!?")


def _sentence(rng: np.random.Generator) -> str:
    words = []
    for _ in range(int(rng.integers(2, 7))):
        words.append("".join(_SYLLABLES[int(rng.integers(len(_SYLLABLES)))] for _ in range(int(rng.integers(1, 4)))))
    text = " ".join(words)
    if rng.random() < 0.3:
        cut = int(rng.integers(1, len(words)))
        text = " ".join(words[:cut]) + ", " + " ".join(words[cut:])
    return text[0].upper() + text[1:] + _ENDINGS[int(rng.integers(len(_ENDINGS)))]


# --------------------------------------------------------------------------- episode


@dataclass
class _Spec:
    """Episode-level decisions for one shot, before its details are planned."""

    start: int
    end: int
    scene: int
    set_id: int
    kind: str
    cast: tuple[int, ...]
    transition: Transition | None = None
    edit: str = ""


def plan_timeline(
    seed: int, *, frame_count: int, width: int, height: int, fps: Fraction, hard_cases: bool = False
) -> EpisodePlan:
    """The whole plan of an episode, deterministic in the arguments. ``hard_cases`` adds
    the editing of :mod:`celmask.tasks.synth.edits` (from streams of its own: the other
    shots are the ones the seed gives without it)."""
    if frame_count < 1:
        raise ValueError(f"frame_count must be >= 1, got {frame_count}")
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and >= 64, got {width}x{height}")
    rng = child_rng(seed, "timeline")
    style = random_style(child_rng(seed, "style"))
    n_cast = int(rng.integers(3, 7))
    cast = tuple(random_design(child_rng(seed, "cast", i), i, style) for i in range(n_cast))
    set_w, set_h = int(round(width * SET_SCALE[0])), int(round(height * SET_SCALE[1]))

    lengths = _shot_lengths(rng, frame_count, fps)
    specs, sets = _scenes(rng, seed, lengths, cast, set_w, set_h)
    _assign_transitions(rng, specs, fps)
    backdrops: list[int] = []
    if hard_cases:
        for k, edit in enumerate(choose_edits(child_rng(seed, "edits"), specs)):
            if edit:
                source = specs[k - 2] if edit == "return" else specs[k - 1]
                specs[k].edit, specs[k].set_id, specs[k].kind, specs[k].cast = (
                    edit,
                    source.set_id,
                    source.kind,
                    source.cast,
                )
                specs[k].transition = Transition("cut", (specs[k].start, specs[k].start))
        backdrops = list(range(len(sets), len(sets) + BACKDROPS))
        sets += [
            random_set(child_rng(seed, "backdrops", i), set_id=i, width=set_w, height=set_h, kind="abstract")
            for i in backdrops
        ]

    shots: list[ShotPlan] = []
    for k, spec in enumerate(specs):
        nxt = specs[k + 1].transition if k + 1 < len(specs) else None
        if spec.edit:
            framing = shots[k - 2] if spec.edit in ("cut-out", "return") else shots[k - 1]
            start, end, _, _ = _content_range(spec, nxt)
            staged = derive_shot(
                child_rng(seed, "shot", k),
                spec.edit,
                framing if spec.edit == "return" else shots[k - 1],
                framing,
                end - start,
                fps,
                sets[spec.set_id],
                width,
                height,
            )
            shot = ShotPlan(
                index=k,
                start=spec.start,
                end=spec.end,
                transition=spec.transition,
                content_start=start,
                content_end=end,
                set_id=spec.set_id,
                kind=spec.kind,
                edit=spec.edit,
                **staged,
            )
        else:
            shot = _plan_shot(child_rng(seed, "shot", k), k, spec, nxt, sets[spec.set_id], cast, width, height, fps)
        if hard_cases:
            calm = _content_range(spec, nxt)[2:]
            rng_k = child_rng(seed, "edits", k)
            switched = plan_switch(rng_k, shot, backdrops, calm)
            if switched is not None:
                shot = replace(shot, switch=switched[0], characters=switched[1])
            busy = [f.frame for f in shot.flashes]
            if shot.switch is not None:
                busy.append(shot.content_start + shot.drawings[shot.switch.drawing])
            shot = replace(shot, occlusion=plan_occlusion(rng_k, calm, busy, width))
        shots.append(shot)
    return EpisodePlan(
        seed=seed,
        width=width,
        height=height,
        fps=fps,
        frame_count=frame_count,
        style=style,
        cast=cast,
        sets=tuple(sets),
        shots=tuple(shots),
        hard_cases=hard_cases,
    )


def _shot_lengths(rng: np.random.Generator, n: int, fps: Fraction) -> list[int]:
    fpsf = float(fps)
    min_len = max(2, int(round(MIN_SHOT_SECONDS * fpsf)))
    if n < 2 * min_len:
        return [n]
    out: list[int] = []
    total = 0
    while total < n:
        r = rng.random()
        if r < 0.2:
            secs = rng.uniform(MIN_SHOT_SECONDS, 1.5)
        elif r < 0.7:
            secs = rng.uniform(1.5, 4.0)
        else:
            secs = rng.uniform(4.0, MAX_SHOT_SECONDS - 1.0)
        length = max(min_len, int(round(secs * fpsf)))
        out.append(length)
        total += length
    out[-1] -= total - n
    if out[-1] < min_len:
        last = out.pop()
        out[-1] += last
    return out


def _scenes(
    rng: np.random.Generator, seed: int, lengths: list[int], cast: tuple[CharacterDesign, ...], set_w: int, set_h: int
) -> tuple[list[_Spec], list[SetDesign]]:
    """Group shots into scenes (one set, one cast subset) and choose each shot's kind."""
    sets: list[SetDesign] = []
    location_ids: list[int] = []
    abstract_id: int | None = None
    specs: list[_Spec] = []
    k, start, scene = 0, 0, 0
    while k < len(lengths):
        n_shots = int(rng.integers(1, 6))
        if location_ids and rng.random() < 0.25:
            set_id = location_ids[int(rng.integers(len(location_ids)))]  # back to a known place
        else:
            set_id = len(sets)
            sets.append(
                random_set(
                    child_rng(seed, "sets", set_id),
                    set_id=set_id,
                    width=set_w,
                    height=set_h,
                    kind=("room", "outdoor")[int(rng.integers(2))],
                )
            )
            location_ids.append(set_id)
        size = int(rng.integers(1, min(4, len(cast)) + 1))
        scene_cast = tuple(int(i) for i in rng.choice(len(cast), size=size, replace=False))
        for j in range(n_shots):
            if k >= len(lengths):
                break
            if j == 0 and rng.random() < 0.35:  # establishing shot
                kind = "empty" if rng.random() < 0.4 else "wide"
            else:
                kind = ("closeup", "closeup", "full", "full", "full", "medium", "medium", "wide", "wide", "empty")[
                    int(rng.integers(10))
                ]
            shot_set = set_id
            if kind == "closeup" and rng.random() < 0.4:
                if abstract_id is None:
                    abstract_id = len(sets)
                    sets.append(
                        random_set(
                            child_rng(seed, "sets", abstract_id),
                            set_id=abstract_id,
                            width=set_w,
                            height=set_h,
                            kind="abstract",
                        )
                    )
                shot_set = abstract_id
            if kind == "empty":
                members: tuple[int, ...] = ()
            elif kind == "closeup":
                members = (scene_cast[int(rng.integers(len(scene_cast)))],)
            else:
                cap = {"wide": 4, "full": 3, "medium": 2}[kind]
                m = int(rng.integers(1, cap + 1))
                pool = list(scene_cast)
                if m > len(pool):  # a passer-by from the rest of the cast
                    pool += [i for i in range(len(cast)) if i not in pool]
                members = tuple(pool[i] for i in sorted(rng.choice(len(pool), size=min(m, len(pool)), replace=False)))
            specs.append(
                _Spec(start=start, end=start + lengths[k], scene=scene, set_id=shot_set, kind=kind, cast=members)
            )
            start += lengths[k]
            k += 1
        scene += 1
    return specs, sets


def _assign_transitions(rng: np.random.Generator, specs: list[_Spec], fps: Fraction) -> None:
    """Choose each boundary's transition; gradual ones only where both shots have room."""
    specs[0].transition = Transition("start", (0, 0))
    stable = 12  # frames each shot keeps free of transitions on each side
    prev_span_end = 0
    for k in range(1, len(specs)):
        b = specs[k].start
        new_scene = specs[k].scene != specs[k - 1].scene
        r = rng.random()
        if new_scene:
            kind = "cut" if r < 0.4 else ("fade" if r < 0.7 else "dissolve")
        else:
            kind = "cut" if r < 0.9 else "dissolve"
        t = Transition("cut", (b, b))
        if kind == "dissolve":
            n = int(rng.integers(8, 31))
            s0 = b - n // 2
            t = Transition("dissolve", (s0, s0 + n))
        elif kind == "fade":
            fo, bl, fi = int(rng.integers(6, 19)), int(rng.integers(0, 7)), int(rng.integers(6, 19))
            n = fo + bl + fi
            s0 = b - n // 2
            t = Transition("fade", (s0, s0 + n), fo, bl, fi)
        if t.kind != "cut":
            prev_ok = t.span[0] - max(specs[k - 1].start, prev_span_end) >= stable
            next_ok = specs[k].end - t.span[1] >= stable + 16  # leaves room for the next span's first half
            if not (prev_ok and next_ok):
                t = Transition("cut", (b, b))
        specs[k].transition = t
        prev_span_end = t.span[1]


# --------------------------------------------------------------------------- shots


def _content_range(spec: _Spec, next_transition: Transition | None) -> tuple[int, int, int, int]:
    """(content start, content end, calm start, calm end) of a shot: the frames showing its
    picture (transitions overlap), and its own transition-free frames (for flashes and subtitles)."""
    tin = spec.transition
    assert tin is not None
    content_start = spec.start
    if tin.kind == "dissolve":
        content_start = tin.span[0]
    elif tin.kind == "fade":
        content_start = tin.span[0] + tin.fade_out + tin.black
    content_end = spec.end
    if next_transition is not None and next_transition.kind == "dissolve":
        content_end = next_transition.span[1]
    elif next_transition is not None and next_transition.kind == "fade":
        content_end = next_transition.span[0] + next_transition.fade_out
    calm1 = min(spec.end, next_transition.span[0]) if next_transition is not None else spec.end
    return content_start, content_end, max(spec.start, tin.span[1]), calm1


def _plan_shot(
    rng: np.random.Generator,
    k: int,
    spec: _Spec,
    next_transition: Transition | None,
    set_design: SetDesign,
    cast: tuple[CharacterDesign, ...],
    width: int,
    height: int,
    fps: Fraction,
) -> ShotPlan:
    """Everything about one shot: content range, drawings, camera, flashes, characters, subtitles."""
    if spec.transition is None:
        raise RuntimeError(f"shot {k}: transitions must be assigned before planning shots")
    tin = spec.transition
    content_start, content_end, calm0, calm1 = _content_range(spec, next_transition)
    n = content_end - content_start

    # -- timing: drawings and held stretches
    r = rng.random()
    timing = "2s" if r < 0.4 else ("3s" if r < 0.7 else ("mixed" if r < 0.9 else "still"))
    if spec.kind == "empty" and rng.random() < 0.3:
        timing = "still"
    drawings, still_spans = plan_drawings(rng, n, timing, fps)
    tau = effective_time(n, still_spans)

    # -- camera
    camera_move, on_ones, camera = stage_camera(
        rng, spec.kind, set_design, n, drawings, still_spans, tau, timing, width, height, content_start, calm0, calm1
    )

    # -- flashes (impacts come with shakes more often)
    flashes: list[Flash] = []
    p_flash = 0.5 if "shake" in camera_move else 0.15
    if rng.random() < p_flash and calm1 - calm0 >= 2 * FLASH_MARGIN + 2:
        length = int(rng.integers(1, 3))
        f0 = int(rng.integers(calm0 + FLASH_MARGIN, calm1 - FLASH_MARGIN - length + 1))
        kind = FLASH_KINDS[int(rng.choice(3, p=[0.4, 0.25, 0.35]))]
        for f in range(f0, f0 + length):
            flashes.append(Flash(f, kind))

    # -- characters
    chars = stage_characters(rng, spec.kind, spec.cast, set_design, cast, camera, drawings, tau, width, height)

    # -- subtitles
    subtitles: list[Subtitle] = []
    if spec.kind != "empty" and rng.random() < 0.4 and calm1 - calm0 >= 36:
        t = calm0 + int(rng.integers(0, 12))
        while t + 18 <= calm1 and len(subtitles) < 4:
            length = int(rng.integers(18, 72))
            end = min(calm1, t + length)
            if end - t < 18:
                break
            subtitles.append(Subtitle(t, end, _sentence(rng)))
            t = end + (0 if rng.random() < 0.5 else int(rng.integers(4, 30)))

    return ShotPlan(
        index=k,
        start=spec.start,
        end=spec.end,
        transition=tin,
        content_start=content_start,
        content_end=content_end,
        set_id=spec.set_id,
        kind=spec.kind,
        timing=timing,
        camera_move=camera_move,
        camera_on_ones=on_ones,
        drawings=drawings,
        still_spans=still_spans,
        camera=camera,
        characters=chars,
        subtitles=tuple(subtitles),
        flashes=tuple(flashes),
    )
