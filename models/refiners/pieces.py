"""Weight-free refinement: snap each mask to the drawing's own flat-colour pieces.

A cel is flat colour pieces bounded by line art (AnimeInterp's segments), so a piece
is a unit a mask should take whole or not at all. Once per frame, for all its
instances, :func:`find_pieces` finds the line art (dark thin strokes: a black-hat on
luma) and grows flat-colour cores into pieces by watershed. Per instance,
:func:`snap_mask` lets the pieces vote: one mostly inside joins, one mostly outside
leaves, and the line art next to kept pieces joins (the generator's truth, like a
hand-drawn mask, holds a character's outline). What the pieces cannot explain keeps
the input, and :func:`celmask.tasks.core.masks.accept_refinement` keeps the whole input mask where
the answer disagrees with it.

    refiner = PiecesRefiner(PiecesConfig())
    refined = refiner.refine([frame.image], [instances])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np

from celmask.models.weights import model_id
from celmask.tasks.core.config import NON_NEGATIVE, POSITIVE, Range, check_rules
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.masks import accept_refinement

Window = tuple[slice, slice]
"""A (rows, columns) crop of a frame."""
REFERENCE_SIDE = 360
"""Pixel sizes in :class:`PiecesConfig` are for a frame whose shorter side is this; they scale with it."""


@dataclass(frozen=True)
class PiecesConfig:
    line_width: Annotated[float, POSITIVE] = 3.0
    """Widest line art stroke (px at a 360-px-high frame): sets the black-hat size and
    how far from a kept piece its outline joins the mask."""
    line_contrast: Annotated[int, Range(0, 255)] = 40
    """A pixel this many grey levels darker than its closed surroundings is line art."""
    line_luma: Annotated[int, Range(0, 255)] = 96
    """... and at most this bright: line art is drawn near black."""
    flat_contrast: Annotated[int, Range(0, 255)] = 12
    """A pixel whose 3x3 colour range (max over RGB) is at most this is flat: a piece's core."""
    min_piece: Annotated[int, Range(1)] = 12
    """Flat cores smaller than this (px at 360 p) seed no piece: noise, not colour."""
    band: Annotated[float, NON_NEGATIVE] = 1.0
    """Pixels this close (px at 360 p) to the mask's edge do not vote: the input's edge is uncertain."""
    merge_contrast: Annotated[float, Range(0, 255)] = 48.0
    """A piece whose inside and outside parts differ by more than this in mean colour
    (any RGB channel) is two pieces run together: it keeps the input."""
    join_share: Annotated[float, Range(0, 1, open_low=True, open_high=True)] = 0.5
    """A piece joins when more than this share of it lies inside the mask."""
    max_piece: Annotated[float, POSITIVE] = 1.0
    """... and it is at most this many times the mask's area (no background joins)."""
    max_shift: Annotated[float, POSITIVE] = 8.0
    """How far (px at 360 p) the input's edge may be off: a kept piece adds no pixel
    farther than this from the mask, and a piece the mask reaches deeper into than
    this never leaves (either may be a character piece that leaks into the set)."""

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass(frozen=True)
class Pieces:
    """One frame split into flat-colour pieces."""

    labels: np.ndarray
    """(H, W) int32 piece id; 0 on separators (line art)."""
    area: np.ndarray
    """(k,) int64 pixel count of each id (``area[0]``: separators)."""
    line: np.ndarray
    """(H, W) bool line art (dark thin strokes)."""
    image: np.ndarray
    """(H, W, 3) uint8 the image, lightly denoised: the pieces' colours."""
    scale: float
    """Frame's shorter side / REFERENCE_SIDE."""


def find_pieces(image: np.ndarray, config: PiecesConfig) -> Pieces:
    """Split an RGB uint8 (H, W, 3) image into flat-colour pieces: flat cores
    (connected line-free pixels whose 3x3 colour range is small) grow by watershed
    into the colour ramps between them, competing with the line art, which stays a
    separator, so anti-aliasing, blur and compression ramps go to the nearer side."""
    scale = min(image.shape[:2]) / REFERENCE_SIDE
    smooth = cv2.medianBlur(np.ascontiguousarray(image), 3)
    luma = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY)
    size = (
        2 * max(1, round(config.line_width * scale)) + 1
    )  # a square closes as well as a disk and is separable: 6x faster
    line = cv2.morphologyEx(luma, cv2.MORPH_BLACKHAT, np.ones((size, size), np.uint8)) > config.line_contrast
    line &= luma <= config.line_luma
    r, g, b = cv2.split(cv2.morphologyEx(smooth, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)))
    flat = (cv2.max(cv2.max(r, g), b) <= config.flat_contrast) & ~line
    count, markers, stats, _ = cv2.connectedComponentsWithStats(flat.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    seeds = np.arange(count, dtype=np.int32)
    seeds[stats[:, cv2.CC_STAT_AREA] < config.min_piece * scale * scale] = 0
    seeds[0] = 0
    markers = seeds[markers]
    markers[line] = count  # the line art grows as one more piece, a separator again below
    cv2.watershed(smooth, markers)
    markers[(markers == count) | (markers < 0)] = 0
    return Pieces(
        labels=markers, area=np.bincount(markers.ravel(), minlength=count), line=line, image=smooth, scale=scale
    )


def snap_mask(mask: np.ndarray, pieces: Pieces, config: PiecesConfig, cover: np.ndarray) -> tuple[Window, np.ndarray]:
    """A non-empty ``mask`` (H, W bool) snapped to the pieces: the window of the frame
    that may change, and the snapped mask in it.

    Pixels near the mask's edge do not vote. A piece with most of the rest inside joins
    if it is not too big and lies wholly within max_shift of the mask; one with most
    outside leaves unless the mask reaches deeper than max_shift into it; one whose
    inside and outside differ in colour (two pieces run together through a gap in the
    line art) is left alone. Line art within a stroke of a kept piece joins unless
    another instance holds it (``cover``: (H, W) how many instance masks, this one
    included, hold each pixel; the line between two characters is the front one's
    outline). Everything else keeps its input value."""
    scale, n = pieces.scale, len(pieces.area)
    band, shift = config.band * scale, config.max_shift * scale
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    margin = int(np.ceil(shift)) + 2  # outside the window is farther than max_shift
    window = (slice(max(0, ys[0] - margin), ys[-1] + 1 + margin), slice(max(0, xs[0] - margin), xs[-1] + 1 + margin))
    labels, inside = pieces.labels[window], mask[window]
    depth = cv2.distanceTransform(inside.view(np.uint8), cv2.DIST_L2, 3)  # into the mask, 0 outside
    distance = cv2.distanceTransform((~inside).view(np.uint8), cv2.DIST_L2, 3)  # from the mask, 0 inside
    # Per piece, its window pixels by zone: deep inside, inside, near outside, far outside, edge band.
    zone = np.select([depth > shift, depth > band, distance > shift, distance > band], [0, 1, 3, 2], 4)
    side = (labels + n * zone).ravel()
    deep, core, near, far, _ = np.bincount(side, minlength=5 * n).reshape(5, n)
    far += pieces.area - np.bincount(labels.ravel(), minlength=n)
    votes_in, votes_out = deep + core, near + far
    share = votes_in / np.maximum(votes_in + votes_out, 1)
    colours = pieces.image[window].reshape(-1, 3)
    sums = np.stack([np.bincount(side, weights=colours[:, c], minlength=5 * n)[: 3 * n] for c in range(3)], axis=1)
    inner = (sums[:n] + sums[n : 2 * n]) / np.maximum(votes_in, 1)[:, None]
    outer = sums[2 * n :] / np.maximum(near, 1)[:, None]
    merged = (votes_in > 0) & (near > 0) & (np.abs(inner - outer) > config.merge_contrast).any(axis=1)
    voted = (votes_in + votes_out > 0) & ~merged
    keep = voted & (share > config.join_share) & (far == 0) & (pieces.area <= config.max_piece * mask.sum())
    drop = voted & (share <= config.join_share) & (deep == 0)
    keep[0] = drop[0] = False
    kept = keep[labels]
    near_kept = cv2.distanceTransform((~kept).view(np.uint8), cv2.DIST_L2, 3) <= config.line_width * scale
    outline = pieces.line[window] & near_kept & (cover[window] <= inside)
    return window, kept | outline | (inside & ~drop[labels])


PIECES_MODEL_ID = model_id("pieces", version="v1")
"""The id of :class:`PiecesRefiner`: a version, as it has no weights; bump it when its output changes."""


class PiecesRefiner:
    """:class:`~celmask.models.refiners.base.Refiner` on the frame's own flat-colour pieces; no weights."""

    def __init__(self, config: PiecesConfig | None = None) -> None:
        self.config = config or PiecesConfig()
        self.model_id = PIECES_MODEL_ID

    def refine(self, images: Sequence[np.ndarray], instances: Sequence[Instances]) -> list[Instances]:
        if len(images) != len(instances):
            raise ValueError(f"refine needs one Instances per image, got {len(images)} images and {len(instances)}")
        return [self._refine_frame(image, inst) for image, inst in zip(images, instances)]

    def _refine_frame(self, image: np.ndarray, inst: Instances) -> Instances:
        if image.shape != (*inst.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"image is {image.dtype} {image.shape}; its instances need RGB uint8 at {inst.size}")
        refined = np.zeros(len(inst), bool)
        masks = inst.mask.copy()
        if inst.mask.any():
            pieces = find_pieces(image, self.config)
            cover = inst.mask.sum(axis=0, dtype=np.uint16)
            for i, mask in enumerate(masks):
                if not mask.any():
                    continue
                window, after = snap_mask(mask, pieces, self.config, cover)
                before = mask[window]  # holds all of the mask: the guard's answer is the same as on the frame
                if accept_refinement(before, after) and not np.array_equal(before, after):
                    mask[window], refined[i] = after, True
        return Instances.from_masks(
            masks,
            score=inst.score,
            class_id=inst.class_id,
            track_id=inst.track_id,
            data={**inst.data, "refined": refined},
        )
