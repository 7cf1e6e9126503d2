"""What ``celmask correct`` is given, as checked corrections: one mask, a new or deleted
track, or a batch in the formats ``celmask export`` writes.

    --mask PNG --track T --frame F          one corrected mask
    --mask PNG --new-track --frame F        a character the detector missed
    --delete-track --track T                a track that is no character
    --palette FFFFFF.png                    a DAVIS palette PNG of a frame (pixel = track id + 1)
    --pngs DIR                              shot_NNNN/track_TTT/FFFFFF.png, 1-bit masks
    --coco instances.json                   COCO instances, RLE or polygons, with track_id and shot_index

A batch is an edited export: a mask equal to the one the manifest holds is no
correction and is skipped, so exporting, fixing a few masks and handing the whole
export back corrects just those. Everything is checked before anything is stored.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.types import Shot
from celmask.tasks.manifest.corrections import Correction
from celmask.tasks.manifest.layout import shot_path
from celmask.tasks.manifest.read import read_shot_meta
from celmask.tasks.manifest.schema import iter_masks
from celmask.tasks.run.correct import check_episode, make_correction, read_mask, scale_mask, scaled_note
from celmask.tasks.run.plan import EpisodePlan, load_plan

FRAME_FILE = re.compile(r"(\d{6})\.png")
SHOT_PART = re.compile(r"shot_(\d{4,})")
TRACK_PART = re.compile(r"track_(\d+)")


def corrections_from_args(episode_dir: Path, args: argparse.Namespace) -> list[Correction]:
    """The corrections the command line asks for, checked against the episode."""
    check_episode(episode_dir)
    plan = load_plan(episode_dir)
    batches = [name for name in ("palette", "pngs", "coco") if getattr(args, name)]
    singles = [name for name in ("mask", "new_track", "delete_track") if getattr(args, name)]
    if len(batches) + bool(singles) != 1:
        raise CelmaskError(
            "celmask correct",
            "needs exactly one of --mask (with --track or --new-track), --delete-track, --palette, --pngs, --coco",
            "see celmask correct --help",
        )
    who = args.who
    if args.palette:
        return from_palette(episode_dir, plan, Path(args.palette), args.shot, args.frame, who)
    if args.pngs:
        return from_pngs(episode_dir, plan, Path(args.pngs), args.shot, who)
    if args.coco:
        return from_coco(episode_dir, plan, Path(args.coco), who)
    if args.shot is None:
        raise CelmaskError("celmask correct", "--shot is required with --mask and --delete-track", "pass --shot N")
    shot = plan.shot(args.shot)
    if args.delete_track:
        if args.track is None or args.mask or args.new_track:
            raise CelmaskError("--delete-track", "takes --track alone", "pass --track T, without --mask")
        return [make_correction(episode_dir, shot, args.track, None, None, delete=True, who=who)]
    if args.new_track == (args.track is not None) or not args.mask:
        raise CelmaskError("--mask", "needs --track T or --new-track (one of them)", "say which track the mask is")
    if args.frame is None:
        raise CelmaskError("--mask", "needs --frame F, the frame it was drawn on", "pass --frame")
    mask, note = read_mask(args.mask, _size(episode_dir, shot))
    track = None if args.new_track else args.track
    return [make_correction(episode_dir, shot, track, args.frame, mask, note=note, who=who)]


def _size(episode_dir: Path, shot: Shot) -> tuple[int, int]:
    return tuple(read_shot_meta(shot_path(episode_dir, shot.index)).source_size)


def _shot_of(plan: EpisodePlan, frame: int, where: str | Path) -> Shot:
    for shot in plan.shots:
        if shot.start <= frame < shot.end:
            return shot
    raise CelmaskError(where, f"frame {frame} is not in the episode (0..{plan.frame_count - 1})", "check the frame")


def _changed(episode_dir: Path, shot: Shot, track: int, frame: int, mask: np.ndarray) -> bool:
    """Whether ``mask`` differs from the one the manifest holds for the track on ``frame``."""
    if not shot.start <= frame < shot.end:
        return True  # make_correction says what is wrong
    for _, _, _, current in iter_masks(episode_dir, frame=frame, track=(shot.index, track)):
        return not np.array_equal(current, mask)
    return True


def _batch(
    episode_dir: Path,
    items: list[tuple[Shot, int, int, np.ndarray, str]],
    who: str | None,
    changed: Callable[[Path, Shot, int, int, np.ndarray], bool] = _changed,
) -> list[Correction]:
    """Corrections of (shot, track, frame, mask, note) items that ``changed`` says differ
    from the manifest."""
    out: list[Correction] = []
    for shot, track, frame, mask, note in items:
        if changed(episode_dir, shot, track, frame, mask):
            out.append(make_correction(episode_dir, shot, track, frame, mask, note=note, who=who))
    if not out:
        raise CelmaskError(episode_dir, "the batch changes no mask", "edit the exported masks before handing them back")
    return out


def _frame_of(path: Path, frame: int | None) -> int:
    match = FRAME_FILE.fullmatch(path.name)
    if frame is None and match is None:
        raise CelmaskError(path, "names no frame (exports name frames FFFFFF.png)", "pass --frame")
    return frame if frame is not None else int(match[1])


def from_palette(
    episode_dir: Path, plan: EpisodePlan, path: Path, shot_index: int | None, frame: int | None, who: str | None
) -> list[Correction]:
    """A mask correction per track in a DAVIS palette PNG of one frame."""
    frame = _frame_of(path, frame)
    shot = plan.shot(shot_index) if shot_index is not None else _shot_of(plan, frame, path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise CelmaskError(path, f"is a {image.mode} image, not a palette PNG", "pass a DAVIS palette PNG")
            index = np.asarray(image)
    except OSError as error:
        raise CelmaskError(path, f"not a readable image ({error})", "pass a DAVIS palette PNG") from None
    size = _size(episode_dir, shot)
    note = f"from palette {path.name}" + scaled_note(index.shape, size)
    exported = np.zeros(size, np.int64)  # the frame as the export drew it: a higher track paints over a lower
    for _, _, track, mask in iter_masks(episode_dir, frame=frame):
        exported[mask] = track + 1
    items = [
        (shot, int(value) - 1, frame, scale_mask(index == value, size, path), note)
        for value in np.unique(index)
        if value
    ]
    return _batch(
        episode_dir, items, who, lambda _e, _s, track, _f, mask: not np.array_equal(exported == track + 1, mask)
    )


def from_pngs(
    episode_dir: Path, plan: EpisodePlan, folder: Path, shot_index: int | None, who: str | None
) -> list[Correction]:
    """A mask correction per ``[shot_NNNN/]track_TTT/FFFFFF.png`` under ``folder``."""
    if not folder.is_dir():
        raise CelmaskError(
            folder, "is not a folder", "pass the folder of an export --format png (or a shot_NNNN in it)"
        )
    items = []
    for path in sorted(folder.rglob("*.png")):
        parts = path.relative_to(folder).parts[:-1]
        shots = [int(m[1]) for p in parts if (m := SHOT_PART.fullmatch(p))]
        tracks = [int(m[1]) for p in parts if (m := TRACK_PART.fullmatch(p))]
        if not tracks or not (shots or shot_index is not None):
            raise CelmaskError(path, "is not under shot_NNNN/track_TTT/", "lay the PNGs out as the png export does")
        shot = plan.shot(shots[-1] if shots else shot_index)
        mask, note = read_mask(path, _size(episode_dir, shot))
        items.append((shot, tracks[-1], _frame_of(path, None), mask, note))
    return _batch(episode_dir, items, who)


def from_coco(episode_dir: Path, plan: EpisodePlan, path: Path, who: str | None) -> list[Correction]:
    """A mask correction per annotation of a COCO instances file with track ids."""
    try:
        data = json.loads(path.read_text())
        frames = {image["id"]: image.get("frame_index", image["id"] - 1) for image in data["images"]}
        annotations = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CelmaskError(
            path, f"not a COCO instances file ({error})", "pass instances.json of export --format coco"
        ) from None
    items = []
    for a in annotations:
        if "track_id" not in a or a.get("image_id") not in frames:
            raise CelmaskError(path, f"annotation {a.get('id')} has no track_id or image", "keep celmask's fields")
        frame = frames[a["image_id"]]
        shot = plan.shot(a["shot_index"]) if "shot_index" in a else _shot_of(plan, frame, path)
        h, w = size = _size(episode_dir, shot)
        segmentation = a["segmentation"]
        if isinstance(segmentation, list):
            rle = mask_util.merge(mask_util.frPyObjects(segmentation, h, w))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_util.frPyObjects(segmentation, *segmentation["size"])
        else:
            rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        mask = scale_mask(mask_util.decode(rle).astype(bool), size, path)
        items.append((shot, int(a["track_id"]), frame, mask, f"from {path.name} annotation {a.get('id')}"))
    return _batch(episode_dir, items, who)
