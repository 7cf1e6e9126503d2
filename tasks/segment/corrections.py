"""Carry a track's hand-corrected masks through its shot: corrected drawings as
permanent keyframes.

Each corrected drawing is propagated forward and backward (the run's propagator),
as far as the next corrected drawing either way, and every drawing keeps the most
confident corrected answer. The run's own masks of the track came from its
keyframes, each mask from one of them (its lineage, the manifest's
``keyframe_frame``); the mask a person corrected shares its error with the run's
masks of the same lineage, while masks of another lineage (the run re-keyed on a
later detection, or a detection stood) owe it nothing, and neither do masks after the
run's own mask jumped (IoU under ``JUMP_IOU`` from one drawing to the next: a
detection was fused in, or the track came back). So a correction replaces the run's
masks of the corrected drawing's lineage until the run re-keys or jumps, until the
run agrees with the correction again (IoU ``AGREE_IOU``: the run is right from
there), or until the correction's confidence falls under ``stop_below``; where the
run had no mask of the track (it lost it, or the track is new) it fills in, up to
where the run finds it again. The run's masks guide the propagator (it fuses with
them where they agree, so the corrected mask follows the character as it grows or
turns). This errs on the side of the run: carried flow drifts without a sign of it
in its confidence, and going on through a run that looks lost (it keeps jumping)
measured worse on the generated episodes than stopping (bench/correct.py).
Re-propagating from the run's keyframes would give the rest again, so the rest
keeps the run's masks.

Works on unique drawings at working resolution, like the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from celmask.models.propagators.base import Guide, Propagator
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.segment.propagate import PropagationConfig

AGREE_IOU = 0.75
"""A carried correction this close to the run's mask hands back to the run (0.9 let
carried flow, which does not grow with a character coming closer, replace a run
that was right)."""
JUMP_IOU = 0.2
"""The run's mask jumped where it overlaps its mask on the drawing before less than
this: a character entering or turning keeps more (0.35-0.4 measured), a re-anchored
mask less (0.05-0.07)."""


@dataclass
class Carried:
    """A track's masks that come from its corrections, per drawing step."""

    mask: dict[int, np.ndarray] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    keyframe: dict[int, int] = field(default_factory=dict)
    """step -> the corrected step its mask came from (itself on a corrected drawing)."""


def carry_corrections(
    propagator: Propagator | None,
    images: Sequence[np.ndarray],
    run_masks: dict[int, np.ndarray],
    run_keys: dict[int, int | None],
    corrected: dict[int, np.ndarray],
    config: PropagationConfig | None = None,
) -> Carried:
    """The masks ``corrected`` (step -> mask) give the track on the drawings ``images``,
    where they replace the run's ``run_masks`` (step -> mask, ``run_keys``: step -> its
    keyframe frame). ``propagator`` None: the corrected drawings alone."""
    config = config or PropagationConfig()
    out = Carried()
    keys = sorted(corrected)
    for key in keys:
        out.mask[key], out.confidence[key], out.keyframe[key] = corrected[key], 1.0, key
    if propagator is None:
        return out
    for i, key in enumerate(keys):
        for direction, bound in (
            (-1, keys[i - 1] if i else -1),
            (1, keys[i + 1] if i + 1 < len(keys) else len(images)),
        ):
            steps = list(range(key + direction, bound, direction))
            if steps:
                _carry(propagator, images, run_masks, run_keys, corrected[key], key, steps, config, out)
    return out


def _carry(
    propagator: Propagator,
    images: Sequence[np.ndarray],
    run_masks: dict[int, np.ndarray],
    run_keys: dict[int, int | None],
    start: np.ndarray,
    key: int,
    steps: list[int],
    config: PropagationConfig,
    out: Carried,
) -> None:
    """Propagate ``start`` at drawing ``key`` through ``steps`` as far as it reaches."""
    lineage, previous = run_keys.get(key), key
    frames = [images[key]] + [images[s] for s in steps]
    empty = np.zeros((1, *start.shape), bool)
    guides: list[Guide | None] = [None] + [
        Guide(run_masks[s][None], np.ones(1, bool)) if s in run_masks else Guide(empty, np.zeros(1, bool))
        for s in steps
    ]
    for step, (masks, confidence) in zip(steps, propagator.propagate(frames, start[None], guides)):
        trust, mask = float(confidence[0]), masks[0]
        if trust < config.stop_below or not mask.any():
            break
        if step in run_masks and (
            run_keys.get(step) != lineage
            or _iou(run_masks.get(previous), run_masks[step]) < JUMP_IOU
            or _iou(mask, run_masks[step]) >= AGREE_IOU
        ):
            break
        if trust > out.confidence.get(step, -1.0):
            out.mask[step], out.confidence[step], out.keyframe[step] = mask, trust, key
        previous = step


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    return 0.0 if a is None else float(mask_iou(a[None], b[None])[0, 0])
