"""Reading an episode's manifest for exports and the QC report: one shot at a time.

Exports and the report walk an episode shot by shot and frame by frame, and need
every column of a row (score, source, keyframe, box), not only the mask that
:func:`celmask.tasks.manifest.schema.iter_masks` yields. :func:`iter_shots` holds one shot's rows
in memory, as strings: masks are decoded on demand (:meth:`ShotRows.mask`) and a
held drawing, whose frames repeat the same string, is decoded once. Where pixels
of the source video are needed, :class:`VideoFrames` decodes it in one forward
pass beside the manifest, after checking by fingerprint that it is the video the
episode was segmented from.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import decode_mask
from celmask.tasks.manifest.schema import ShotMeta, read_shot_meta, shot_files
from celmask.tasks.video import iter_frames, probe

FRAME_NAME = "{:06d}"
"""File stem of a frame in every export: its index in the episode."""
MASK_CACHE = 16
"""Decoded masks kept per shot: enough for the frames of any held drawing (1080p: 2 MB each)."""


class Row(NamedTuple):
    """One (frame, instance) row of a shot file."""

    frame_index: int
    track_id: int
    label: str
    score: float
    source: str
    is_keyframe: bool
    bbox: tuple[int, int, int, int]
    area: int
    rle: str


COLUMNS = ("frame_index", "track_id", "label", "score", "source", "is_keyframe", "bbox", "area", "mask_rle")


@dataclass
class ShotRows:
    """A shot file's metadata and rows, in (frame, track) order."""

    meta: ShotMeta
    rows: list[Row]
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the masks: the video's frame size."""
        return self.meta.source_size

    def frames(self) -> Iterator[tuple[int, list[Row]]]:
        """(frame index, its rows) for every frame of the shot, those without instances included."""
        by_frame = {f: list(rows) for f, rows in groupby(self.rows, key=lambda r: r.frame_index)}
        for frame in range(self.meta.shot.start, self.meta.shot.end):
            yield frame, by_frame.get(frame, [])

    def mask(self, rle: str) -> np.ndarray:
        """The (height, width) bool mask of a row's ``rle``, read-only, decoded once per
        distinct string while it keeps coming (held frames)."""
        mask = self._masks.get(rle)
        if mask is None:
            if len(self._masks) >= MASK_CACHE:
                self._masks.clear()
            mask = self._masks[rle] = decode_mask(rle, *self.size)
            mask.flags.writeable = False
        return mask


def shot_metas(episode_dir: str | Path) -> list[ShotMeta]:
    """The metadata of every shot file of an episode, in shot order (a cheap read: no rows)."""
    return [read_shot_meta(p) for p in shot_files(episode_dir).values()]


def read_shot_rows(path: str | Path) -> ShotRows:
    """One shot file's metadata and rows."""
    meta = read_shot_meta(path)
    table = pq.read_table(path, columns=list(COLUMNS), partitioning=None)
    columns = [table.column(c).to_pylist() for c in COLUMNS]
    rows = [
        Row(f, t, label, score, source, key, tuple(box), area, rle)
        for f, t, label, score, source, key, box, area, rle in zip(*columns)
    ]
    return ShotRows(meta, rows)


def iter_shots(episode_dir: str | Path) -> Iterator[ShotRows]:
    """Every shot file of an episode, one in memory at a time, in shot order."""
    for path in shot_files(episode_dir).values():
        yield read_shot_rows(path)


class VideoFrames:
    """Frames of an episode's source video by index, at ``size`` (width, height; default
    the video's), decoded in one forward pass from the first frame: ask for frames in
    increasing order. ``metas`` (not empty) are the episode's shots; the video must be
    theirs."""

    def __init__(
        self, video: str | Path, metas: list[ShotMeta], size: tuple[int, int] | None = None, *, deblock: bool = True
    ) -> None:
        info = probe(video)
        expected = {m.video_fingerprint for m in metas}
        if info.fingerprint not in expected:
            raise CelmaskError(
                video,
                f"is not the video episode {metas[0].episode_id} was segmented from "
                f"(fingerprint {info.fingerprint}, the manifest's {', '.join(sorted(expected))})",
                "pass the episode's source video with --video",
            )
        self.video = video
        self.size = size or (info.width, info.height)
        self._frames = iter_frames(video, width=self.size[0], height=self.size[1], deblock=deblock)

    def get(self, index: int) -> np.ndarray:
        """The (height, width, 3) RGB frame ``index``; earlier frames are skipped for good."""
        for frame in self._frames:
            if frame.index == index:
                return frame.image
            if frame.index > index:
                break
        raise CelmaskError(
            self.video,
            f"has no frame {index} (or it was asked for out of order)",
            "pass the episode's source video, complete",
        )

    def close(self) -> None:
        """Stop decoding (kills ffmpeg when frames are left)."""
        self._frames.close()
