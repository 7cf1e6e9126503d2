"""The refiner interface: snap each instance's mask to the drawing's real boundaries.

Backends: :mod:`celmask.models.refiners.sam` (Segment Anything, prompted or voting) and
:mod:`celmask.models.refiners.pieces` (weight-free: the drawing's own flat-colour pieces). Every
backend keeps an instance's input mask when its own answer disagrees with it
(:func:`celmask.tasks.core.masks.accept_refinement`), so a refiner can sharpen an edge but never
swallow the background or drop a limb.

    refined = refiner.refine(images, instances)    # one Instances per image
    refined[0].data["refined"]                     # (n,) bool: which rows changed
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from celmask.tasks.core.instances import Instances


class Refiner(Protocol):
    model_id: str
    """What refined the masks, for the manifest (name and weight checksum)."""

    def refine(self, images: Sequence[np.ndarray], instances: Sequence[Instances]) -> list[Instances]:
        """For each RGB uint8 (H, W, 3) image and its Instances (same H, W): the same
        rows in the same order, masks (and boxes) replaced where the refinement was
        accepted, ``data["refined"]`` (n,) bool saying where. Batched by frame."""
        ...
