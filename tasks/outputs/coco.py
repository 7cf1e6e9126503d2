"""COCO instances and YouTube-VIS JSON of an episode's masks.

Both files describe the episode's frames, named ``<frame index>.jpg`` (six digits)
in a folder of their own; celmask does not write them, ffmpeg does, numbered the
way the manifest counts::

    ffmpeg -i VIDEO -fps_mode passthrough -start_number 0 -qscale:v 2 frames/%06d.jpg

- COCO (``instances.json``): one image per frame of every shot (frames without
  characters are negatives), image id = frame index + 1; one annotation per
  manifest row, its mask as the manifest's compressed RLE
  (``{"size": [h, w], "counts": str}``, which ``COCO.annToMask`` reads), plus
  ``track_id``, ``shot_index``, ``score``, ``source`` and ``is_keyframe``.
- YouTube-VIS (``instances.json``): one video per shot (tracks are per shot), video
  id = shot index + 1; one annotation per track with a segmentation, box and area
  per frame of the shot (``null`` where the track is absent) and its mean score.

Both carry the episode's identity (schema version 2, :mod:`celmask.tasks.manifest.cast`):
``character_id`` (null where unassigned, and for episodes without a cast) and
``character`` (the enrolled name, or null) on every annotation.

Category ids are the manifest's labels in order, from 1. Rows with an empty mask
are left out. Files are written as a stream (one shot in memory), with sorted keys
and no clock, so the same manifest gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

from celmask.tasks.manifest.cast import TrackCharacter, characters_of
from celmask.tasks.manifest.read import FRAME_NAME, ShotRows, iter_shots, shot_metas
from celmask.tasks.manifest.schema import ShotMeta

JSON_NAME = "instances.json"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _write_list(fh: IO[str], key: str, items: Iterable[dict[str, Any]]) -> None:
    """``,"key":[item,...]`` written item by item."""
    fh.write(f',"{key}":[')
    for i, item in enumerate(items):
        fh.write(("," if i else "") + _dumps(item))
    fh.write("]")


def _frame_file(frame: int) -> str:
    return FRAME_NAME.format(frame) + ".jpg"


def _head(fh: IO[str], episode_id: str, metas: list[ShotMeta], what: str) -> dict[str, int]:
    """Write the opening, ``info``, ``licenses`` and ``categories``; label -> category id."""
    labels = list(dict.fromkeys(label for m in metas for label in m.labels))
    info = {
        "description": f"celmask {what} of episode {episode_id}",
        "episode_id": episode_id,
        "version": version("celmask"),
        "video_fingerprint": metas[0].video_fingerprint if metas else "",
        "config_hashes": sorted({m.config_hash for m in metas}),
        "frame_file": _frame_file(0),
    }
    fh.write('{"info":' + _dumps(info) + ',"licenses":[]')
    _write_list(
        fh, "categories", ({"id": i + 1, "name": label, "supercategory": "character"} for i, label in enumerate(labels))
    )
    return {label: i + 1 for i, label in enumerate(labels)}


def _identity(characters: dict[tuple[int, int], TrackCharacter], shot: int, track: int) -> dict[str, Any]:
    t = characters.get((shot, track))
    return {"character_id": t.character_id if t else None, "character": t.character if t else None}


def write_coco(episode_dir: Path, dest: Path, video: str | Path | None = None) -> int:
    """Write ``dest/instances.json`` (COCO instances) for ``episode_dir``; 1 file."""
    metas = shot_metas(episode_dir)
    characters = characters_of(episode_dir)
    with open(dest / JSON_NAME, "w") as fh:
        category = _head(fh, episode_dir.name, metas, "COCO instances")
        _write_list(
            fh,
            "images",
            (
                {
                    "id": f + 1,
                    "file_name": _frame_file(f),
                    "height": m.source_size[0],
                    "width": m.source_size[1],
                    "frame_index": f,
                    "shot_index": m.shot.index,
                }
                for m in metas
                for f in range(m.shot.start, m.shot.end)
            ),
        )
        _write_list(
            fh,
            "annotations",
            (
                {
                    "id": n + 1,
                    "image_id": r.frame_index + 1,
                    "category_id": category[r.label],
                    "iscrowd": 0,
                    "segmentation": {"size": list(shot.size), "counts": r.rle},
                    "area": r.area,
                    "bbox": list(r.bbox),
                    "track_id": r.track_id,
                    "shot_index": shot.meta.shot.index,
                    "score": r.score,
                    "source": r.source,
                    "is_keyframe": r.is_keyframe,
                    **_identity(characters, shot.meta.shot.index, r.track_id),
                }
                for n, (shot, r) in enumerate(
                    (shot, r) for shot in iter_shots(episode_dir) for r in shot.rows if r.area
                )
            ),
        )
        fh.write("}\n")
    return 1


def _track_annotations(
    shot: ShotRows, category: dict[str, int], characters: dict[tuple[int, int], TrackCharacter]
) -> Iterable[dict[str, Any]]:
    """One YouTube-VIS annotation per track of ``shot``, without ``id``, in track order."""
    start, length = shot.meta.shot.start, shot.meta.shot.frame_count
    tracks: dict[int, dict[str, Any]] = {}
    for r in shot.rows:
        if not r.area:
            continue
        t = tracks.setdefault(
            r.track_id,
            {
                "video_id": shot.meta.shot.index + 1,
                "category_id": category[r.label],
                "iscrowd": 0,
                "track_id": r.track_id,
                **_identity(characters, shot.meta.shot.index, r.track_id),
                "height": shot.size[0],
                "width": shot.size[1],
                "segmentations": [None] * length,
                "bboxes": [None] * length,
                "areas": [None] * length,
                "scores": [],
            },
        )
        i = r.frame_index - start
        t["segmentations"][i] = {"size": list(shot.size), "counts": r.rle}
        t["bboxes"][i], t["areas"][i] = list(r.bbox), r.area
        t["scores"].append(r.score)
    for _, t in sorted(tracks.items()):
        scores = t.pop("scores")
        yield {**t, "score": sum(scores) / len(scores)}


def write_ytvis(episode_dir: Path, dest: Path, video: str | Path | None = None) -> int:
    """Write ``dest/instances.json`` (YouTube-VIS) for ``episode_dir``; 1 file."""
    metas = shot_metas(episode_dir)
    characters = characters_of(episode_dir)
    with open(dest / JSON_NAME, "w") as fh:
        category = _head(fh, episode_dir.name, metas, "YouTube-VIS")
        _write_list(
            fh,
            "videos",
            (
                {
                    "id": m.shot.index + 1,
                    "name": f"shot_{m.shot.index:04d}",
                    "height": m.source_size[0],
                    "width": m.source_size[1],
                    "length": m.shot.frame_count,
                    "shot_index": m.shot.index,
                    "file_names": [_frame_file(f) for f in range(m.shot.start, m.shot.end)],
                }
                for m in metas
            ),
        )
        _write_list(
            fh,
            "annotations",
            (
                {"id": n + 1, **a}
                for n, a in enumerate(
                    a for shot in iter_shots(episode_dir) for a in _track_annotations(shot, category, characters)
                )
            ),
        )
        fh.write("}\n")
    return 1
