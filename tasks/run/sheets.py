"""A shot's contact sheet, drawn from the stills its segmentation kept, right after
the shot is written: the report copies it instead of decoding the shot again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.types import still_size
from celmask.tasks.manifest.layout import sheet_path, shot_path
from celmask.tasks.manifest.read import read_shot_rows
from celmask.tasks.manifest.schema import ShotSummary
from celmask.tasks.outputs.report import contact_sheet, jpeg
from celmask.tasks.segment.shot import ShotSegmentation


class Stills:
    """The frames of a shot just segmented, from its stills."""

    def __init__(self, seg: ShotSegmentation) -> None:
        self.seg = seg
        self.drawing_of = dict(zip(seg.frame_indices.tolist(), seg.drawing.tolist()))

    def get(self, index: int) -> np.ndarray:
        return self.seg.stills[self.drawing_of[index]]


def write_shot_sheet(episode_dir: str | Path, seg: ShotSegmentation, summary: ShotSummary) -> Path:
    """Save the contact sheet of a shot just written beside its summary (atomically)."""
    shot = read_shot_rows(shot_path(episode_dir, seg.shot.index))
    path = sheet_path(episode_dir, seg.shot.index)
    write_atomic(path, jpeg(contact_sheet(summary, shot, Stills(seg), still_size(seg.source_size))))
    return path
