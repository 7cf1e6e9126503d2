"""A cast folder for ``--cast`` made from a generated episode's truth: one folder per
true character of its busiest shot, holding that character's cut-out from the shot's
middle frame (the true mask as alpha), named ``c<character_id>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from celmask.tasks.synth import iter_truth_masks, load_truth
from celmask.tasks.video import iter_frames


def cast_folder(truth_dir: Path, video: Path, out: Path) -> Path:
    shot = max(load_truth(truth_dir).shots, key=lambda s: len(s.tracks))
    frame = (shot.start + shot.end) // 2
    image = next(iter_frames(video, start=frame, end=frame + 1)).image
    _, ids, masks = next(iter_truth_masks(truth_dir, frame, frame + 1))
    for t, mask in zip(ids.tolist(), masks, strict=True):
        folder = out / f"c{next(x.character_id for x in shot.tracks if x.track_id == t)}"
        folder.mkdir(parents=True)
        Image.fromarray(np.dstack([image, mask.astype(np.uint8) * 255])).save(folder / "ref.png")
    return out
