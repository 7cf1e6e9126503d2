"""Colours: RGB triples sampled in HSV, and the cel-shadow tone of a colour.

Colours are plain ``tuple[int, int, int]`` in RGB order (the order of the frames we
pipe to ffmpeg as ``rgb24``), so they compare, hash and serialise exactly.
"""

from __future__ import annotations

import colorsys

import numpy as np

RGB = tuple[int, int, int]


def hsv(h: float, s: float, v: float) -> RGB:
    """RGB from hue in turns (wraps), saturation and value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def random_colour(
    rng: np.random.Generator, *, s: tuple[float, float], v: tuple[float, float], h: float | None = None
) -> RGB:
    """A colour with saturation and value drawn from the given ranges (hue random unless given)."""
    hue = float(rng.random()) if h is None else h
    return hsv(hue, float(rng.uniform(*s)), float(rng.uniform(*v)))


def shade(c: RGB, strength: float, tint: RGB = (70, 60, 130)) -> RGB:
    """The cel-shadow tone of ``c``: darker and pulled toward a cool tint, as painters do.

    ``strength`` in [0, 1]: 0 returns ``c``; 0.3 is a typical anime shadow.
    """
    k = 1.0 - strength
    mix = 0.25 * strength
    return tuple(int(round(min(255.0, max(0.0, ch * k * (1 - mix) + t * mix)))) for ch, t in zip(c, tint))  # type: ignore[return-value]


def lighten(c: RGB, amount: float) -> RGB:
    """``c`` moved toward white by ``amount`` in [0, 1]."""
    return tuple(int(round(ch + (255 - ch) * amount)) for ch in c)  # type: ignore[return-value]


def darken(c: RGB, amount: float) -> RGB:
    """``c`` moved toward black by ``amount`` in [0, 1]."""
    return tuple(int(round(ch * (1.0 - amount))) for ch in c)  # type: ignore[return-value]
