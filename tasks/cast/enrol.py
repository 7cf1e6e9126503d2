"""Enrolment: a studio's main cast, named, from a few reference pictures each.

``--cast DIR`` holds one folder per character, named as the character is to be
called, with a few reference images: cut-outs (PNG/WebP with alpha: the opaque
pixels are the character) or pictures of the character alone (every pixel
counts). Each character's pictures make one signature stack, like a track's
(:func:`celmask.tasks.cast.signature.stacked_signature`), and the clustering takes
it as a track of a shot of its own, anchored by the name: the cluster it joins
gets the name (``character`` column); enrolled characters never merge with each
other; one nobody joins is not in the episode.

The references are described once, when ``celmask run`` or ``celmask finalize`` is
given ``--cast``, and kept in ``_run/enrolment.json``, so every later finish (a
retried shot on another host) names the cast alike without the folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from celmask.tasks.cast.signature import stacked_signature
from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import enrolment_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
REFERENCE_LONG = 480
"""Long side references are described at: about a character's size in a decoded frame."""
FIX = "give --cast a folder with one sub-folder per character name, each holding reference images or cut-outs"


@dataclass(frozen=True)
class Enrolment:
    names: tuple[str, ...]
    signatures: np.ndarray
    """(len(names), 1 + len(PARTS), SIZE)."""
    key: str
    """Content key of names and signatures: a changed enrolment re-clusters afresh."""


def _picture(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, mask) of a reference, its long side REFERENCE_LONG at most."""
    try:
        with Image.open(path) as image:
            rgba = np.asarray(image.convert("RGBA"))
    except (OSError, UnidentifiedImageError) as error:
        raise CelmaskError(path, f"not a readable image ({error})", FIX) from None
    scale = min(1.0, REFERENCE_LONG / max(rgba.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale)))
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
    mask = rgba[..., 3] >= 128
    return np.ascontiguousarray(rgba[..., :3]), mask


def load_enrolment(cast_dir: str | Path) -> Enrolment:
    """Describe the references of ``cast_dir``; a one-line error for anything unusable."""
    cast_dir = Path(cast_dir)
    if not cast_dir.is_dir():
        raise CelmaskError(cast_dir, "no such directory" if not cast_dir.exists() else "is not a directory", FIX)
    folders = sorted(p for p in cast_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise CelmaskError(cast_dir, "holds no character folders", FIX)
    stacks = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CelmaskError(folder, f"holds no reference images ({', '.join(IMAGE_SUFFIXES)})", FIX)
        stack, pixels = stacked_signature([_picture(p) for p in files])
        if not pixels:
            raise CelmaskError(folder, "its references show too few coloured pixels to describe", FIX)
        stacks.append(np.round(stack.astype(np.float64), 6))
    names = tuple(p.name for p in folders)
    signatures = np.stack(stacks)
    digest = hashlib.blake2b(json.dumps(names).encode() + signatures.tobytes(), digest_size=16).hexdigest()
    return Enrolment(names, signatures, digest)


def save_enrolment(episode_dir: str | Path, enrolment: Enrolment) -> None:
    """Keep ``enrolment`` in the episode's ``_run/`` for every later finish."""
    path = enrolment_path(episode_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "names": list(enrolment.names),
        "shape": list(enrolment.signatures.shape),
        "signatures": enrolment.signatures.reshape(-1).tolist(),
        "key": enrolment.key,
    }
    write_atomic(path, (json.dumps(content, separators=(",", ":")) + "\n").encode())


def read_enrolment(episode_dir: str | Path) -> Enrolment | None:
    """The enrolment kept in the episode, or None."""
    path = enrolment_path(episode_dir)
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        return Enrolment(tuple(d["names"]), np.asarray(d["signatures"], np.float64).reshape(d["shape"]), d["key"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CelmaskError(path, f"unreadable ({error})", "give --cast DIR again to celmask finalize") from None
