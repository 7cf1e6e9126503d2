"""Writing the mask manifest: one Parquet file per shot, the episode table, ``_SUCCESS.json``.

:func:`write_shot` streams a :class:`~celmask.tasks.segment.shot.ShotSegmentation` into
``shots/shot_<NNNN>.parquet`` drawing by drawing: each unique drawing's masks are
upscaled to the video's size and encoded once, and its held frames repeat the
strings, so the cost follows the drawings, not the frames, and memory holds one row
group. The file is written under a hidden temporary name and renamed when complete
(:mod:`celmask.tasks.core.atomic`); the same input gives the same bytes (pinned writer options, no
clock in the file). :func:`write_episode_table` and :func:`write_success` close an
episode. The layout and schemas are in :mod:`celmask.tasks.manifest.schema`.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from celmask.tasks.core.atomic import atomic_file, write_atomic
from celmask.tasks.core.config import config_hash, config_json
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.instances import Instances
from celmask.tasks.core.rle import Box, rle_geometry, runs_string, window_runs
from celmask.tasks.core.types import Source
from celmask.tasks.manifest.layout import EPISODE_TABLE_NAME, SUCCESS_NAME, shot_path
from celmask.tasks.manifest.schema import (
    EPISODE_SCHEMA,
    LABELS,
    SCHEMA_VERSION,
    SHOT_SCHEMA,
    Keyframe,
    ShotMeta,
    ShotSummary,
    read_episode_table,
)
from celmask.tasks.manifest.validate import check_shots
from celmask.tasks.segment.shot import ShotSegmentation

VIDEO_DAMAGE_KEY = "celmask.video_damage"
"""Episode table metadata: frames of the video that did not decode (JSON), when any."""
ROW_GROUP_ROWS = 4096
"""Rows per row group: about 1 MB at 1080p, so a reader filtering on frames skips
most of a long shot; a typical shot is one group."""
WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["episode_id", "label", "source", "mask_rle"],
    "version": "2.6",
    "data_page_version": "1.0",
    "write_statistics": True,
    "store_schema": True,
    "sorting_columns": [pq.SortingColumn(SHOT_SCHEMA.get_field_index(c)) for c in ("frame_index", "track_id")],
}
"""Pinned, so the bytes do not change with pyarrow's defaults. zstd 3: level 1 is 7%
larger, level 9 5% smaller for a slower write. The dictionary on ``mask_rle`` stores
a held drawing's mask once per page; zstd alone finds most of that repeat too (2%
larger without it)."""
UPSCALE_SIGMA = 0.35
"""Gaussian smoothing, in working pixels, between bilinear upscaling and the 0.5
threshold. Bilinear-then-threshold alone is nearest-neighbour at 2x (2-pixel stair
steps); smoothing rounds them off: bench/manifest.py measures about 30% fewer wrong
pixels against the true shapes. Parts one working pixel thin, which smoothing would
erase, keep their bilinear pixels (see :func:`upscale_window`)."""
MARGIN = 2
"""Working pixels kept around a mask's box when upscaling: beyond them nothing reaches 0.5."""


# --------------------------------------------------------------------------- masks


def upscale_window(mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """The part of (h, w) bool ``mask`` upscaled to ``size`` (H, W) that can hold
    pixels, and its (top, left), touching only the mask's box. Bilinear upscaling,
    :data:`UPSCALE_SIGMA` smoothing, threshold 0.5; where an opening by a kernel just
    wider than a working pixel removes bilinear pixels (a thin line, a lone pixel), the
    bilinear pixels stay. The result equals upscaling the whole frame: the window
    starts on a working pixel that maps to a whole source pixel. It is computed
    column-major (a transposed view), the order RLE wants."""
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    if bw == 0:
        return np.zeros((0, 0), bool), 0, 0
    if (h, w) == tuple(size):
        return mask[y : y + bh, x : x + bw], y, x
    (y0, y1, top, bottom), (x0, x1, left, right) = (
        _span(lo, hi, n, out) for lo, hi, n, out in ((y, y + bh, h, size[0]), (x, x + bw, w, size[1]))
    )
    sy, sx = size[0] / h, size[1] / w
    soft = cv2.resize(
        mask[y0:y1, x0:x1].T.astype(np.float32, order="C"), (bottom - top, right - left), interpolation=cv2.INTER_LINEAR
    )
    bilinear = (soft >= 0.5).view(np.uint8)
    thick = cv2.morphologyEx(bilinear, cv2.MORPH_OPEN, np.ones((math.ceil(sx) + 1, math.ceil(sy) + 1), np.uint8))
    smooth = cv2.GaussianBlur(soft, (0, 0), sigmaX=UPSCALE_SIGMA * sy, sigmaY=UPSCALE_SIGMA * sx) >= 0.5
    return (smooth | (bilinear > thick)).T, top, left


def _span(lo: int, hi: int, n: int, out: int) -> tuple[int, int, int, int]:
    """Working range around [lo, hi) of an axis of ``n`` pixels, widened by MARGIN and
    aligned so both ends map to whole pixels of the ``out``-pixel axis, and that range there."""
    step = n // math.gcd(n, out)
    a = max(0, lo - MARGIN) // step * step
    b = min(n, -(-(hi + MARGIN) // step) * step)
    return a, b, a * out // n, b * out // n


def upscale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) = ``size`` bool: ``mask`` as the manifest stores it at source resolution."""
    window, top, left = upscale_window(mask, size)
    full = np.zeros(size, bool)
    full[top : top + window.shape[0], left : left + window.shape[1]] = window
    return full


class _Mask(NamedTuple):
    """One instance of a drawing, encoded at source resolution."""

    track_id: int
    label: str
    score: float
    source: str
    is_keyframe: bool
    keyframe_frame: int | None
    bbox: Box
    area: int
    rle: str


def _encode_drawing(inst: Instances, size: tuple[int, int], labels: tuple[str, ...] = LABELS) -> list[_Mask]:
    """A drawing's instances, sorted by track id, with masks upscaled to ``size`` and encoded."""
    height, width = size
    out = []
    for i in np.argsort(inst.track_id, kind="stable"):
        window, top, left = upscale_window(inst.mask[i], size)
        runs = window_runs(window, top, left, height, width)
        area, bbox = rle_geometry(runs, height)
        key = int(inst.data["keyframe_frame"][i])
        out.append(
            _Mask(
                int(inst.track_id[i]),
                labels[int(inst.class_id[i])],
                float(inst.score[i]),
                Source(int(inst.data["source"][i])).label,
                bool(inst.data["is_keyframe"][i]),
                key if key >= 0 else None,
                bbox,
                area,
                runs_string(runs, height, width),
            )
        )
    return out


# --------------------------------------------------------------------------- shot files


def _rows(seg: ShotSegmentation, episode_id: str, labels: tuple[str, ...]) -> Iterator[tuple]:
    """Rows of SHOT_SCHEMA in (frame, track) order; each drawing is encoded once, when
    its first frame comes."""
    height, width = seg.source_size
    drawing, masks = -1, []
    for frame, pts, d in zip(seg.frame_indices.tolist(), seg.times.tolist(), seg.drawing.tolist()):
        if d != drawing:
            drawing, masks = d, _encode_drawing(seg.instances[d], seg.source_size, labels)
        for m in masks:
            distance = None if m.keyframe_frame is None else abs(frame - m.keyframe_frame)
            yield (
                episode_id,
                seg.shot.index,
                frame,
                pts,
                m.track_id,
                m.label,
                m.score,
                m.source,
                m.is_keyframe and frame == m.keyframe_frame,
                m.keyframe_frame,
                distance,
                m.bbox,
                m.area,
                height,
                width,
                m.rle,
            )


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)


def summarize(episode_id: str, seg: ShotSegmentation, *, rows: int, seconds: dict[str, float]) -> ShotSummary:
    """The summary of a shot segmented into ``seg`` and written as ``rows`` rows."""
    keyframes = tuple(
        Keyframe(
            int(c.track_id),
            int(c.frame_index),
            round(float(c.total), 6),
            {k: round(float(v), 6) for k, v in sorted(c.components.items())},
        )
        for track_id in sorted(seg.keyframes)
        for c in seg.keyframes[track_id]
    )
    tracks = {int(t) for inst in seg.instances for t in inst.track_id}
    return ShotSummary(
        episode_id,
        seg.shot,
        "ok",
        "",
        len(seg.frame_indices),
        len(seg.instances),
        rows,
        len(tracks),
        keyframes,
        {k: round(float(v), 4) for k, v in seconds.items()},
    )


def write_shot(
    episode_dir: str | Path,
    seg: ShotSegmentation,
    config: Any,
    video_fingerprint: str,
    *,
    labels: tuple[str, ...] = LABELS,
) -> ShotSummary:
    """Write ``seg`` to ``<episode_dir>/shots/shot_<NNNN>.parquet`` (replacing an earlier
    run's file only once the new one is complete) and return the shot's summary.
    ``episode_dir``'s name is the episode id; ``config`` is the settings dataclass."""
    start = time.perf_counter()
    episode_dir = Path(episode_dir)
    meta = ShotMeta(
        schema_version=SCHEMA_VERSION,
        celmask_version=version("celmask"),
        episode_id=episode_dir.name,
        shot=seg.shot,
        config_json=config_json(config),
        config_hash=config_hash(config),
        models=dict(seg.model_ids),
        video_fingerprint=video_fingerprint,
        source_size=tuple(seg.source_size),
        work_size=tuple(seg.work_size),
        labels=tuple(labels),
        rows=int(sum(len(seg.instances[d]) for d in seg.drawing)),
        drawings=len(seg.instances),
        tracks=len({int(t) for inst in seg.instances for t in inst.track_id}),
    )
    schema = SHOT_SCHEMA.with_metadata(meta.to_metadata())
    path = shot_path(episode_dir, seg.shot.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh, pq.ParquetWriter(fh, schema, **WRITER_OPTIONS) as writer:
        group: list[tuple] = []
        for row in _rows(seg, episode_dir.name, meta.labels):
            group.append(row)
            if len(group) == ROW_GROUP_ROWS:
                writer.write_table(_table(group, schema))
                group = []
        if group:
            writer.write_table(_table(group, schema))
    return summarize(
        episode_dir.name, seg, rows=meta.rows, seconds={**seg.seconds, "manifest": time.perf_counter() - start}
    )


# --------------------------------------------------------------------------- episode


def write_episode_table(
    episode_dir: str | Path, shots_info: Iterable[ShotSummary], video_damage: dict[str, Any] | None = None
) -> Path:
    """Write the episode table (``_episode.parquet``): one row per shot summary, in shot
    order; ``video_damage`` (frames of the video that did not decode) in its metadata."""
    episode_dir = Path(episode_dir)
    summaries = sorted(shots_info, key=lambda s: s.shot.index)
    indices = [s.shot.index for s in summaries]
    if len(set(indices)) != len(indices):
        raise ValueError(f"one summary per shot, got shots {indices}")
    schema = EPISODE_SCHEMA.with_metadata(
        {
            "celmask.schema_version": str(SCHEMA_VERSION),
            "celmask.version": version("celmask"),
            **({VIDEO_DAMAGE_KEY: json.dumps(video_damage, sort_keys=True)} if video_damage else {}),
        }
    )
    table = pa.Table.from_pylist([s.to_row() for s in summaries], schema=schema)
    path = episode_dir / EPISODE_TABLE_NAME
    episode_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def write_success(
    episode_dir: str | Path,
    expected_shots: int,
    shot_detection: dict[str, Any] | None = None,
    cast: dict[str, Any] | None = None,
    video_damage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check that shots 0..``expected_shots``-1 are all written and valid, then write
    ``_SUCCESS.json`` (returned): counts, per-stage seconds from the episode table when
    there is one, versions, and ``shot_detection`` (the shot settings and the learned
    shot model with its checksum, which decided the shots' ranges) and ``cast`` (the
    counts of the episode's cast tables, which validate checks) and ``video_damage``
    (frames of the video that did not decode, which validate reports) when given.
    Otherwise remove a stale ``_SUCCESS.json`` and raise."""
    episode_dir = Path(episode_dir)
    check = check_shots(episode_dir, expected_shots)
    success = episode_dir / SUCCESS_NAME
    if check.problems:
        success.unlink(missing_ok=True)
        raise CelmaskError(
            episode_dir,
            f"not complete, {len(check.problems)} problem(s); first: {check.problems[0]}",
            "re-run those shots (celmask validate lists every problem), then finalize again",
        )
    seconds: dict[str, float] = {}
    if (episode_dir / EPISODE_TABLE_NAME).exists():
        for summary in read_episode_table(episode_dir):
            for stage, value in summary.seconds.items():
                seconds[stage] = round(seconds.get(stage, 0.0) + value, 4)
    content = {
        "episode_id": episode_dir.name,
        "schema_version": SCHEMA_VERSION,
        "shots": check.shots,
        "frames": check.frames,
        "rows": check.rows,
        "masks": check.masks,
        "video_fingerprint": check.metas[0].video_fingerprint if check.metas else "",
        "config_hashes": sorted({m.config_hash for m in check.metas}),
        "seconds": seconds,
        **({"shot_detection": shot_detection} if shot_detection is not None else {}),
        **({"cast": cast} if cast is not None else {}),
        **({"video_damage": video_damage} if video_damage else {}),
        "versions": {
            "celmask": version("celmask"),
            "pyarrow": pa.__version__,
            "numpy": np.__version__,
            "pycocotools": version("pycocotools"),
            "python": platform.python_version(),
        },
    }
    write_atomic(success, (json.dumps(content, indent=1, sort_keys=True) + "\n").encode())
    return content
