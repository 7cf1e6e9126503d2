"""Real drawings for the detector's training data: RGBA cut-outs and painted backgrounds.

A folder of real art is laid out by source, one sub-folder each (a flat folder is one
source named after it)::

    CUTOUTS/<source>/<name>.png|webp      straight RGBA, alpha = the exact mask
    BACKGROUNDS/<source>/<name>.jpg|png   sets with no character

Near-duplicate poses (the same drawing with another face) abound within a source, so
pictures are split into train / val / test by **character**, never by file
(:func:`split_units`). A cut-out's character is the part of its name before the first
``__`` (``emi__emi_basic_grin.png`` is ``emi``: the convention of ../shared/realart);
a name without ``__`` belongs to a character named after its source folder, so a
folder of one studio character (``OUR_CAST/<character>/*.png``) is that character and
an unlabelled folder stays in one split whole. A character whose name starts with
another's of the same source is that one in another outfit (``emicas``, ``emiwheel``
are ``emi``). Backgrounds split by their name's first word (``emi_kitchen`` and
``emi_dining`` are one house).

A studio fine-tuning on its own cast wants every character trained on, so its cut-outs
may instead be split by **pose** (:func:`by_pose`): a pose is one body drawing, found
from the alpha alone (:func:`group_poses`: the same silhouette with another face or
blush is the same pose), and each character's poses are shared out between the splits.

Every file is checked once, when loaded: a "cut-out" without alpha, one that is fully
opaque, an unreadable image, one too small to use, or a folder without images is a
one-line :class:`~celmask.tasks.core.errors.CelmaskError` naming the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.synth.seeding import child_rng

CUTOUT_SUFFIXES = (".png", ".webp")
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MIN_CUTOUT_SIDE = 32
"""A cut-out's opaque part must be at least this many pixels high and wide."""
MIN_BACKGROUND_SIDE = 160
OPAQUE_LIMIT = 0.995
"""A cut-out whose alpha is >= 128 on more than this share of its pixels is no cut-out."""
CUTOUT_BOTTOM_CROP = {"waifu": 0.84}
"""Cut-outs whose name starts with a key lose the rows below this fraction of their
height: Waifu Labs images carry an opaque logo in the bottom-left corner of their
alpha (the bust is just cut a little higher)."""
SPLIT_SHARES = {"train": 0.7, "val": 0.12, "test": 0.18}
"""Share of the split units (characters, background groups) of each split."""
SAME_POSE_IOU = 0.9
"""Two cut-outs of a character are one pose when their alpha masks, each scaled to its
box, overlap at least this much and their boxes' aspect ratios differ by under
:data:`SAME_POSE_ASPECT`: expressions, blushes and tears change little of a silhouette."""
SAME_POSE_ASPECT = 0.05
POSE_GRID = (48, 96)
"""(width, height) the masks are scaled to for the comparison."""


@dataclass(frozen=True)
class Cutout:
    """A real character cut-out: straight (not premultiplied) RGBA, cropped to its alpha."""

    name: str
    rgba: np.ndarray
    sha256: str
    source: str = "cutouts"
    character: str = ""
    pose: int = 0
    """Which of its character's body drawings this is (:func:`group_poses`)."""


@dataclass(frozen=True)
class Background:
    """A painted set (RGB) with no character on it."""

    name: str
    rgb: np.ndarray
    sha256: str
    source: str
    group: str


def _images(directory: Path, suffixes: tuple[str, ...], what: str) -> list[tuple[str, Path]]:
    """(source, path) of every image under ``directory`` (itself and one level down)."""
    if not directory.is_dir():
        raise CelmaskError(directory, f"{what} directory not found", f"give a directory of {what} images")
    found = [(directory.name, p) for p in sorted(directory.iterdir()) if p.suffix.lower() in suffixes and p.is_file()]
    for sub in sorted(d for d in directory.iterdir() if d.is_dir()):
        found += [(sub.name, p) for p in sorted(sub.iterdir()) if p.suffix.lower() in suffixes and p.is_file()]
    if not found:
        kinds = "/".join(s.lstrip(".") for s in suffixes)
        raise CelmaskError(
            directory, f"no {kinds} images in the {what} directory", f"give a directory of {what} images"
        )
    return found


def _read(path: Path) -> tuple[np.ndarray, bytes]:
    data = path.read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CelmaskError(path, "unreadable image", "replace or remove the file")
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return img, data


def character_of(name: str, source: str) -> str:
    """The character a cut-out shows, before outfits are merged (see the module docstring)."""
    stem = Path(name).stem
    return f"{source}/{stem.split('__', 1)[0]}" if "__" in stem else source


def merge_outfits(characters: list[str]) -> dict[str, str]:
    """Character -> the character it is an outfit of: the shortest other name of the same
    source that its name starts with (itself when there is none)."""
    distinct = sorted(set(characters), key=lambda c: (len(c), c))
    out: dict[str, str] = {}
    for c in distinct:
        src, _, name = c.rpartition("/")
        base = next(
            (b for b in distinct if b != c and b.rpartition("/")[0] == src and name.startswith(b.rpartition("/")[2])), c
        )
        out[c] = out.get(base, base)
    return out


def read_cutout(path: Path, source: str) -> Cutout:
    """One cut-out, checked and cropped to its alpha (see :data:`CUTOUT_BOTTOM_CROP`)."""
    img, data = _read(path)
    if img.ndim != 3 or img.shape[2] != 4:
        raise CelmaskError(path, "cut-out has no alpha channel", "save it as RGBA with the character's mask in alpha")
    rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    for prefix, keep in CUTOUT_BOTTOM_CROP.items():
        if path.name.startswith(prefix):
            rgba = rgba[: round(rgba.shape[0] * keep)]
    solid = rgba[..., 3] >= 128
    if solid.mean() > OPAQUE_LIMIT:
        raise CelmaskError(
            path, "cut-out is fully opaque (no mask in its alpha)", "cut the character out onto transparency"
        )
    ys, xs = np.nonzero(solid)
    if ys.size == 0 or min(ys.max() - ys.min(), xs.max() - xs.min()) + 1 < MIN_CUTOUT_SIDE:
        raise CelmaskError(
            path,
            f"cut-out too small to use (opaque part under {MIN_CUTOUT_SIDE} px)",
            "use a larger image or remove it",
        )
    rgba = np.ascontiguousarray(rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return Cutout(path.name, rgba, hashlib.sha256(data).hexdigest(), source, character_of(path.name, source))


def group_poses(cutouts: list[Cutout]) -> list[int]:
    """The pose number of each cut-out within its character: 0, 1, ... in the order each
    pose first appears. A cut-out joins the first pose of its character whose first
    cut-out has nearly its aspect ratio and silhouette (:data:`SAME_POSE_IOU`)."""
    firsts: dict[str, list[tuple[float, np.ndarray]]] = {}
    out = []
    for c in cutouts:
        h, w = c.rgba.shape[:2]
        aspect = w / h
        mask = cv2.resize((c.rgba[..., 3] >= 128).astype(np.uint8), POSE_GRID, interpolation=cv2.INTER_AREA) > 0
        seen = firsts.setdefault(c.character, [])
        for k, (a, m) in enumerate(seen):
            if (
                abs(a - aspect) < SAME_POSE_ASPECT * max(a, aspect)
                and mask_iou(m[None], mask[None])[0, 0] >= SAME_POSE_IOU
            ):
                out.append(k)
                break
        else:
            out.append(len(seen))
            seen.append((aspect, mask))
    return out


def load_cutouts(directory: str | Path | None) -> list[Cutout]:
    """Every cut-out under ``directory`` (sorted by source, then name), its character's
    outfits merged (:func:`merge_outfits`) and its poses numbered (:func:`group_poses`);
    [] for None."""
    if directory is None:
        return []
    found = [read_cutout(p, source) for source, p in _images(Path(directory), CUTOUT_SUFFIXES, "cut-out")]
    merged = merge_outfits([c.character for c in found])
    found = [replace(c, character=merged[c.character]) for c in found]
    return [replace(c, pose=k) for c, k in zip(found, group_poses(found), strict=True)]


def load_backgrounds(directory: str | Path | None) -> list[Background]:
    """Every background under ``directory`` as RGB; [] for None."""
    if directory is None:
        return []
    out = []
    for source, path in _images(Path(directory), BACKGROUND_SUFFIXES, "background"):
        img, data = _read(path)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
        if min(rgb.shape[:2]) < MIN_BACKGROUND_SIDE:
            raise CelmaskError(
                path,
                f"background too small to use ({rgb.shape[1]}x{rgb.shape[0]}, need {MIN_BACKGROUND_SIDE} px a side)",
                "use a larger image or remove it",
            )
        word = re.split(r"[_\-\s]", path.stem, maxsplit=1)[0].lower()
        group = f"{source}/{word}"
        out.append(Background(path.name, np.ascontiguousarray(rgb), hashlib.sha256(data).hexdigest(), source, group))
    return out


def split_units(units: list[str], seed: int, shares: dict[str, float] | None = None) -> dict[str, str]:
    """Split the distinct ``units`` (characters or background groups) into train / val /
    test: a seeded shuffle, then largest-remainder counts of :data:`SPLIT_SHARES`, at
    least one unit in each split when there are three or more. Unit -> split."""
    shares = SPLIT_SHARES if shares is None else shares
    distinct = sorted(set(units))
    order = [distinct[i] for i in child_rng(seed, "realart-split").permutation(len(distinct))]
    n = len(order)
    counts = {k: int(n * v) for k, v in shares.items()}
    for k in sorted(shares, key=lambda k: -(n * shares[k] - counts[k]))[: n - sum(counts.values())]:
        counts[k] += 1
    if n >= 3:
        for k in shares:
            while counts[k] == 0:
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[k] += 1
    out, i = {}, 0
    for k in shares:
        for unit in order[i : i + counts[k]]:
            out[unit] = k
        i += counts[k]
    return out


def by_split(items: list, key: Callable[[Any], str], seed: int) -> dict[str, list]:
    """``items`` grouped by the split of their unit ``key(item)``. Units of sources that
    hold several (the characters of one title) and sources that are one unit each are
    split apart (:func:`split_units`), so every split gets some of both kinds."""
    units = sorted({key(x) for x in items})
    per_source: dict[str, int] = {}
    for u in units:
        per_source[u.split("/", 1)[0]] = per_source.get(u.split("/", 1)[0], 0) + 1
    many = [u for u in units if per_source[u.split("/", 1)[0]] > 1]
    single = [u for u in units if per_source[u.split("/", 1)[0]] == 1]
    assignment = {**split_units(many, seed), **split_units(single, seed + 1)}
    out: dict[str, list] = {k: [] for k in SPLIT_SHARES}
    for x in items:
        out[assignment[key(x)]].append(x)
    return out


def by_pose(cutouts: list[Cutout], seed: int, shares: dict[str, float] | None = None) -> dict[str, list[Cutout]]:
    """``cutouts`` grouped by split with every character's poses shared out between the
    splits of ``shares`` (default :data:`SPLIT_SHARES`; :func:`split_units` per
    character), so every character is trained on and val and test hold poses training
    never showed. A character of one pose is all train, one of two poses gives its
    second to val."""
    shares = SPLIT_SHARES if shares is None else shares
    out: dict[str, list[Cutout]] = {k: [] for k in SPLIT_SHARES}
    characters = sorted({c.character for c in cutouts})
    for i, character in enumerate(characters):
        mine = [c for c in cutouts if c.character == character]
        poses = sorted({c.pose for c in mine})
        if len(poses) >= 3:
            assignment = split_units([str(p) for p in poses], seed + i, shares)
        else:
            assignment = dict(zip([str(p) for p in poses], ("train", "val"), strict=False))
        for c in mine:
            out[assignment[str(c.pose)]].append(c)
    return out
