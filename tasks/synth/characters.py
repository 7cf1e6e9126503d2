"""Anime-style characters: designs and poses (what to draw, not how).

A :class:`CharacterDesign` fixes a character's look for a whole episode (palette,
proportions, hair style, clothes, line weight, shadow side); an :class:`EpisodeStyle`
holds what a studio's characters share, so episodes differ from each other and
characters within one episode vary around it. A :class:`Pose` is one drawing's
body and face (limb angles, lean, head tilt, eyes, mouth, brows). Drawing them is
:mod:`celmask.tasks.synth.sprites`.

Coordinates: "units" where the head radius is about 1, y down, origin on the ground
between the feet (the *anchor*)::

    design = random_design(child_rng(seed, "cast", 0), character_id=0)
    poses = talk_poses(random_base_pose(child_rng(seed, "pose")))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from celmask.tasks.synth.palette import RGB, hsv, random_colour

HAIR_STYLES = ("short", "bob", "long", "ponytail", "twintails", "spiky")
EYES = ("open", "half", "closed", "happy", "wide")
MOUTHS = ("closed", "smile", "frown", "open", "wide", "o")
BROWS = ("neutral", "angry", "sad", "up")


@dataclass(frozen=True)
class CharacterDesign:
    """How one character looks; fixed for a whole episode. Lengths are in head units."""

    character_id: int
    skin: RGB
    hair: RGB
    eye: RGB
    top: RGB
    bottom: RGB
    shoes: RGB
    accent: RGB
    line: RGB
    line_px: float
    """Outline width in output pixels (about 1.5-3.5)."""
    shadow_strength: float
    shadow_angle: float
    """Direction (radians, image coordinates, y down) toward which the shadow band lies."""
    head_w: float
    head_h: float
    heads_tall: float
    shoulder: float
    hip: float
    limb: float
    hair_style: str
    hair_length: float
    bangs: int
    eye_size: float
    bottom_style: str
    long_sleeves: bool
    accessory: str
    blush: bool

    @property
    def body(self) -> _Body:
        return _body(self)


@dataclass(frozen=True)
class Pose:
    """One drawing's pose and expression. Angles in radians.

    ``arms`` is (left shoulder, left elbow, right shoulder, right elbow): the shoulder
    angle is measured from hanging straight down, positive away from the body; the elbow
    adds to it for the forearm. ``legs`` is (left hip, left knee, right hip, right knee)
    in the same convention. "Left" is the screen left.
    """

    lean: float = 0.0
    head_tilt: float = 0.0
    turn: float = 0.0
    arms: tuple[float, float, float, float] = (0.12, -0.05, 0.12, -0.05)
    legs: tuple[float, float, float, float] = (0.04, 0.0, 0.04, 0.0)
    eyes: str = "open"
    mouth: str = "closed"
    brows: str = "neutral"
    gaze: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.eyes not in EYES:
            raise ValueError(f"eyes must be one of {EYES}, got {self.eyes!r}")
        if self.mouth not in MOUTHS:
            raise ValueError(f"mouth must be one of {MOUTHS}, got {self.mouth!r}")
        if self.brows not in BROWS:
            raise ValueError(f"brows must be one of {BROWS}, got {self.brows!r}")


@dataclass(frozen=True)
class _Body:
    neck: float
    torso: float
    thigh: float
    shin: float
    upper_arm: float
    forearm: float

    @property
    def leg(self) -> float:
        return self.thigh + self.shin


def _body(d: CharacterDesign) -> _Body:
    rest = (d.heads_tall - 1.0) * 2.0 * d.head_h
    neck = 0.3 * d.head_h
    torso = 0.42 * (rest - neck)
    leg = 0.58 * (rest - neck)
    arm = 0.85 * torso + 0.15 * leg
    return _Body(neck=neck, torso=torso, thigh=0.5 * leg, shin=0.5 * leg, upper_arm=0.5 * arm, forearm=0.5 * arm)


def head_center(design: CharacterDesign) -> tuple[float, float]:
    """Head centre in units relative to the anchor, for a neutral standing pose."""
    b = design.body
    return (0.0, -(b.leg + b.torso + b.neck + 0.92 * design.head_h))


def standing_height(design: CharacterDesign) -> float:
    """Anchor to top of the hair, in units (neutral pose)."""
    return -head_center(design)[1] + 1.25 * design.head_h


# --------------------------------------------------------------------------- designs


@dataclass(frozen=True)
class EpisodeStyle:
    """What all characters of one episode share: the studio's look."""

    line: RGB
    line_px: float
    shadow_strength: float
    shadow_angle: float
    heads_tall: tuple[float, float]
    eye_size: float
    saturation: tuple[float, float]


def random_style(rng: np.random.Generator) -> EpisodeStyle:
    """An episode look: line colour/weight, shadow, proportions, eye size, saturation."""
    line_choices = [(22, 18, 24), (40, 26, 22), (28, 26, 48), (12, 12, 12)]
    chibi = rng.random() < 0.15
    side = 1.0 if rng.random() < 0.5 else -1.0
    angle = math.atan2(float(rng.uniform(0.1, 0.6)), side)
    return EpisodeStyle(
        line=line_choices[int(rng.integers(len(line_choices)))],
        line_px=float(rng.uniform(1.6, 3.2)),
        shadow_strength=float(rng.uniform(0.22, 0.4)),
        shadow_angle=angle,
        heads_tall=(2.6, 3.4) if chibi else (5.2, 7.2),
        eye_size=float(rng.uniform(0.85, 1.3)) * (1.25 if chibi else 1.0),
        saturation=(0.25, 0.6) if rng.random() < 0.5 else (0.4, 0.85),
    )


def random_design(rng: np.random.Generator, character_id: int, style: EpisodeStyle | None = None) -> CharacterDesign:
    """A character design: palette, proportions, hair, clothes. Deterministic in ``rng``."""
    if style is None:
        style = random_style(rng)
    skin_h = float(rng.uniform(0.03, 0.09))
    skin = hsv(skin_h, float(rng.uniform(0.12, 0.42)), float(rng.uniform(0.72, 1.0)))
    hair_kind = rng.random()
    if hair_kind < 0.2:
        hair = random_colour(rng, s=(0.05, 0.3), v=(0.12, 0.3))  # black-ish
    elif hair_kind < 0.4:
        hair = random_colour(rng, s=(0.4, 0.8), v=(0.35, 0.65), h=float(rng.uniform(0.04, 0.1)))  # brown
    elif hair_kind < 0.5:
        hair = random_colour(rng, s=(0.35, 0.7), v=(0.85, 1.0), h=float(rng.uniform(0.11, 0.16)))  # blonde
    else:
        hair = random_colour(rng, s=(0.35, 0.85), v=(0.45, 0.95))  # anime hair: any hue
    sat = style.saturation
    top = random_colour(rng, s=sat, v=(0.45, 0.98))
    bottom = random_colour(rng, s=sat, v=(0.2, 0.8))
    if rng.random() < 0.2:
        top = random_colour(rng, s=(0.0, 0.08), v=(0.88, 1.0))  # white shirt
    line_px = style.line_px * float(rng.uniform(0.85, 1.15))
    return CharacterDesign(
        character_id=character_id,
        skin=skin,
        hair=hair,
        eye=random_colour(rng, s=(0.45, 0.95), v=(0.35, 0.9)),
        top=top,
        bottom=bottom,
        shoes=random_colour(rng, s=(0.1, 0.6), v=(0.15, 0.5)),
        accent=random_colour(rng, s=(0.55, 0.95), v=(0.7, 1.0)),
        line=style.line,
        line_px=line_px,
        shadow_strength=style.shadow_strength * float(rng.uniform(0.85, 1.15)),
        shadow_angle=style.shadow_angle + float(rng.uniform(-0.2, 0.2)),
        head_w=float(rng.uniform(0.9, 1.05)),
        head_h=float(rng.uniform(1.0, 1.12)),
        heads_tall=float(rng.uniform(*style.heads_tall)),
        shoulder=float(rng.uniform(0.75, 1.15)),
        hip=float(rng.uniform(0.6, 0.95)),
        limb=float(rng.uniform(0.34, 0.5)),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        hair_length=float(rng.uniform(2.0, 4.5)),
        bangs=int(rng.integers(3, 8)),
        eye_size=style.eye_size * float(rng.uniform(0.85, 1.15)),
        bottom_style=("skirt", "pants", "shorts")[int(rng.integers(3))],
        long_sleeves=bool(rng.random() < 0.5),
        accessory=("none", "ribbon", "clip")[int(rng.integers(3))],
        blush=bool(rng.random() < 0.4),
    )


# --------------------------------------------------------------------------- poses


def random_expression(rng: np.random.Generator, base: Pose) -> Pose:
    """``base`` with a different face: eyes, mouth, brows (a big change for close-ups)."""
    eyes = EYES[int(rng.integers(len(EYES)))]
    mouth = MOUTHS[int(rng.integers(len(MOUTHS)))]
    brows = BROWS[int(rng.integers(len(BROWS)))]
    return replace(
        base, eyes=eyes, mouth=mouth, brows=brows, head_tilt=base.head_tilt + float(rng.uniform(-0.12, 0.12))
    )


def random_base_pose(rng: np.random.Generator) -> Pose:
    """A neutral-ish standing pose with a random expression and arm placement."""

    def arm() -> tuple[float, float]:
        kind = rng.random()
        if kind < 0.55:
            return float(rng.uniform(0.05, 0.3)), float(rng.uniform(-0.15, 0.15))  # hanging
        if kind < 0.8:
            return float(rng.uniform(0.3, 0.7)), float(rng.uniform(-2.3, -1.6))  # hand on chest / hip
        return float(rng.uniform(1.2, 2.6)), float(rng.uniform(-0.6, 0.4))  # raised

    la, le = arm()
    ra, re = arm()
    return Pose(
        lean=float(rng.uniform(-0.06, 0.06)),
        head_tilt=float(rng.uniform(-0.15, 0.15)),
        turn=float(rng.uniform(-0.6, 0.6)),
        arms=(la, le, ra, re),
        legs=(float(rng.uniform(0.0, 0.12)), 0.0, float(rng.uniform(0.0, 0.12)), 0.0),
        eyes="open",
        mouth=("closed", "smile", "closed", "frown")[int(rng.integers(4))],
        brows=BROWS[int(rng.integers(len(BROWS)))],
        gaze=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.15, 0.15))),
    )


def walk_cycle(base: Pose, direction: float, n: int = 4) -> list[Pose]:
    """``n`` drawings of a walk: legs and arms swing in opposition, body bobs its head."""
    out = []
    for k in range(n):
        ph = 2.0 * math.pi * k / n
        s = math.sin(ph)
        out.append(
            replace(
                base,
                turn=0.6 * direction,
                lean=0.05 * direction,
                head_tilt=base.head_tilt + 0.04 * math.cos(ph),
                legs=(0.05 + 0.3 * s, -0.25 * max(s, 0.0), 0.05 - 0.3 * s, -0.25 * max(-s, 0.0)),
                arms=(0.15 - 0.35 * s, -0.2, 0.15 + 0.35 * s, -0.2),
                mouth="closed" if k % 2 else base.mouth,
            )
        )
    return out


def talk_poses(base: Pose) -> list[Pose]:
    """Mouth flaps and a blink over one pose: the drawings of a character speaking."""
    return [
        replace(base, mouth="closed"),
        replace(base, mouth="open"),
        replace(base, mouth="wide", head_tilt=base.head_tilt + 0.05),
        replace(base, mouth="closed", eyes="closed"),
    ]


def gesture_poses(rng: np.random.Generator, base: Pose) -> list[Pose]:
    """A waving or pointing arm: 3 drawings swinging one arm."""
    side = int(rng.integers(2))
    out = []
    for k, swing in enumerate((1.9, 2.5, 2.1)):
        arms = list(base.arms)
        arms[2 * side] = swing
        arms[2 * side + 1] = 0.5 if k % 2 else -0.3
        out.append(replace(base, arms=tuple(arms), mouth="open" if k == 1 else "smile"))  # type: ignore[arg-type]
    return out
