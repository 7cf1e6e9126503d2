"""``celmask correct``: a hand correction re-propagates one track, leaves every other
track and shot as it was, survives re-runs, and bad input changes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from celmask.flows.cli import main
from celmask.tasks.core.masks import mask_iou
from celmask.tasks.manifest.corrections import Correction, applied, save_correction
from celmask.tasks.manifest.layout import base_shot_path, shot_path, success_path
from celmask.tasks.manifest.schema import iter_masks
from celmask.tasks.manifest.validate import validate
from celmask.tasks.outputs.exports import export_episode
from celmask.tasks.outputs.report import write_report
from celmask.tasks.run.finish import finish_episode
from celmask.tasks.run.plan import load_plan
from celmask.tasks.run.shot import run_shot
from celmask.tasks.synth import iter_truth_masks

SHOT, FRAME = 0, 20


@pytest.fixture
def episode(finished, tmp_path) -> Path:
    """A copy of the finished episode to correct."""
    out = tmp_path / "out"
    shutil.copytree(finished.out, out)
    return out / finished.episode.name


def _tree(episode: Path) -> dict[str, bytes]:
    """Every file of the episode but the lock the commands take (empty, left in place)."""
    files = (p for p in sorted(episode.rglob("*")) if p.is_file() and p.name != "lock")
    return {str(p.relative_to(episode)): p.read_bytes() for p in files}


def _rows(path: Path, track: int, keep: bool = True) -> list[dict]:
    rows = pq.read_table(path).to_pylist()
    return [r for r in rows if (r["track_id"] == track) == keep]


def _true_mask(finished, episode: Path, track: int, frame: int) -> np.ndarray:
    """The true mask of the character that ``track`` shows on ``frame``."""
    (current,) = [m for *_, m in iter_masks(episode, frame=frame, track=(SHOT, track))]
    _, _, masks = next(iter_truth_masks(finished.video.parent, frame, frame + 1))
    return masks[int(np.argmax(mask_iou(current[None], masks)[0]))]


def _correct(*args: object) -> int:
    return main(["correct", *map(str, args)])


def _mask_png(tmp_path: Path, mask: np.ndarray, name: str = "mask.png") -> Path:
    path = tmp_path / name
    Image.fromarray(mask).save(path)
    return path


def _worse(mask: np.ndarray) -> np.ndarray:
    """A correction that differs from the truth the run found: the mask moved aside."""
    return np.roll(mask, 12, axis=1)


def test_a_correction_rebuilds_its_track_and_nothing_else(finished, episode, tmp_path, capsys):
    before = _tree(episode)
    other_track = _rows(shot_path(episode, SHOT), 0, keep=False)
    mask = _worse(_true_mask(finished, episode, 0, FRAME))
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", _mask_png(tmp_path, mask)) == 0
    assert "_SUCCESS.json written" in capsys.readouterr().out

    after = _tree(episode)
    assert after["shots/shot_0001.parquet"] == before["shots/shot_0001.parquet"]  # another shot: same bytes
    assert _rows(shot_path(episode, SHOT), 0, keep=False) == other_track  # another track: same rows
    assert base_shot_path(episode, SHOT).read_bytes() == before["shots/shot_0000.parquet"]
    track = _rows(shot_path(episode, SHOT), 0)
    (key,) = [r for r in track if r["is_keyframe"]]
    assert (key["frame_index"], key["source"], key["keyframe_distance"]) == (FRAME, "corrected", 0)
    (stored,) = [m for *_, m in iter_masks(episode, frame=FRAME, track=(SHOT, 0))]
    assert np.array_equal(stored, mask)  # the person's mask, exactly
    carried = [r for r in track if r["source"] in ("propagated", "refined") and r["keyframe_frame"] == FRAME]
    assert carried, "the correction reached no other drawing"
    assert success_path(episode).exists() and not validate(episode).problems
    assert applied(shot_path(episode, SHOT))["applied"] == ["track_0000_frame_000020.json"]
    report = (episode / "_report" / "index.html").read_text()
    assert "track 0: corrected by hand on frame 20" in report


def test_corrections_survive_a_rerun(finished, episode, tmp_path):
    mask = _worse(_true_mask(finished, episode, 0, FRAME))
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", _mask_png(tmp_path, mask)) == 0
    corrected = shot_path(episode, SHOT).read_bytes()
    plan = load_plan(episode)
    shot = plan.shots[SHOT]

    assert run_shot(plan.video, shot, episode, finished.settings).cached  # nothing changed
    assert not run_shot(plan.video, shot, episode, finished.settings, force=True).cached  # `celmask rerun`
    assert shot_path(episode, SHOT).read_bytes() == corrected  # recomputed, corrected again: the same bytes


@pytest.mark.slow
def test_stored_corrections_are_in_the_cache_key_and_stale_ones_are_reported(finished, episode, tmp_path, caplog):
    mask = _worse(_true_mask(finished, episode, 0, FRAME))
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", _mask_png(tmp_path, mask)) == 0
    plan = load_plan(episode)
    shot = plan.shots[SHOT]
    # A correction stored since is part of the key: the shot is not taken from the cache.
    stale = Correction("mask", SHOT, 7, FRAME, *mask.shape, applied_mask_rle(episode))
    save_correction(episode, stale)
    with caplog.at_level(logging.WARNING):
        assert not run_shot(plan.video, shot, episode, finished.settings).cached
    assert "track_0007_frame_000020.json no longer applies" in caplog.text
    record = applied(shot_path(episode, SHOT))
    assert record["stale"] == [{"file": "track_0007_frame_000020.json", "why": "the shot has no track 7 any more"}]
    assert record["applied"] == ["track_0000_frame_000020.json"]
    assert finish_episode(episode, plan).success is not None
    page = Path(write_report(episode, plan.video)).read_text()  # the report lists it too (README)
    assert "correction track_0007_frame_000020.json no longer applies: the shot has no track 7 any more" in page

    # A changed setting recomputes the shot and applies the correction to the new result.
    settings = {**finished.settings, "propagation.extend": 2}
    assert not run_shot(plan.video, shot, episode, settings).cached
    (stored,) = [m for *_, m in iter_masks(episode, frame=FRAME, track=(SHOT, 0))]
    assert np.array_equal(stored, mask)


def applied_mask_rle(episode: Path) -> str:
    return json.loads(next((episode / "_corrections" / "shot_0000").glob("track_0000_*.json")).read_text())["mask_rle"]


def test_new_and_deleted_tracks(finished, episode, tmp_path):
    before = _rows(shot_path(episode, SHOT), 1, keep=False)
    mask = _true_mask(finished, episode, 1, FRAME)
    assert _correct(episode, "--shot", SHOT, "--delete-track", "--track", 1) == 0
    assert _rows(shot_path(episode, SHOT), 1) == [] and _rows(shot_path(episode, SHOT), 1, keep=False) == before
    assert _correct(episode, "--shot", SHOT, "--new-track", "--frame", FRAME, "--mask", _mask_png(tmp_path, mask)) == 0
    added = _rows(shot_path(episode, SHOT), 1000)
    assert {r["frame_index"] for r in added} >= {FRAME - 1, FRAME, FRAME + 1}
    assert not validate(episode).problems


def test_a_batch_from_an_edited_palette_export(finished, episode, tmp_path):
    export = tmp_path / "palette"
    export_episode(episode, "palette", export)
    frame_png = export / "shot_0000" / f"{FRAME:06d}.png"
    with Image.open(frame_png) as image:
        index = np.asarray(image).copy()
        palette = image.getpalette()
    index[index == 1] = 0  # track 0 redrawn, moved aside, behind track 1
    index[_worse(_true_mask(finished, episode, 0, FRAME)) & (index == 0)] = 1
    edited = Image.fromarray(index)
    edited.putpalette(palette)
    edited.save(frame_png)
    untouched = _rows(shot_path(episode, SHOT), 0, keep=False)
    assert _correct(episode, "--palette", frame_png) == 0
    assert applied(shot_path(episode, SHOT))["applied"] == ["track_0000_frame_000020.json"]  # track 1 unchanged
    assert _rows(shot_path(episode, SHOT), 0, keep=False) == untouched


def test_a_smaller_mask_of_the_same_shape_is_scaled_and_said_so(finished, episode, tmp_path, capsys):
    mask = _true_mask(finished, episode, 0, FRAME)
    half = _mask_png(tmp_path, mask[::2, ::2])
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", half) == 0
    assert "scaled from 160x90 to 320x180" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong shape", "mask is 100x100 but the video is 320x180"),
        ("empty", "the mask is empty"),
        ("frame outside", "frame 60: not a frame of the shot [0, 41)"),
        ("unknown track", "track 9: no such track"),
        ("unknown shot", "shot 5: episode ep has shots 0..1"),
        ("not complete", "has no _SUCCESS.json"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(finished, episode, tmp_path, capsys, case, says):
    mask = _true_mask(finished, episode, 0, FRAME)
    args = {"shot": SHOT, "track": 0, "frame": FRAME}
    png = _mask_png(tmp_path, mask)
    if case == "wrong shape":
        png = _mask_png(tmp_path, np.ones((100, 100), bool))
    elif case == "empty":
        png = _mask_png(tmp_path, np.zeros_like(mask))
    elif case == "frame outside":
        args["frame"] = 60
    elif case == "unknown track":
        args["track"] = 9
    elif case == "unknown shot":
        args["shot"] = 5
    else:
        success_path(episode).unlink()
    before = _tree(episode)
    capsys.readouterr()
    flags = [x for k, v in args.items() for x in (f"--{k}", v)]
    assert _correct(episode, *flags, "--mask", png) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("celmask: error: ") and says in err[0], err
    assert _tree(episode) == before


def test_same_corrections_give_the_same_bytes(finished, episode, tmp_path):
    mask = _worse(_true_mask(finished, episode, 0, FRAME))
    png = _mask_png(tmp_path, mask)
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", png) == 0
    first = shot_path(episode, SHOT).read_bytes()
    assert _correct(episode, "--shot", SHOT, "--track", 0, "--frame", FRAME, "--mask", png, "--who", "someone") == 0
    assert hashlib.sha256(shot_path(episode, SHOT).read_bytes()).digest() == hashlib.sha256(first).digest()


def test_a_batch_from_edited_png_and_coco_exports(finished, episode, tmp_path):
    moved = _worse(_true_mask(finished, episode, 0, FRAME))
    pngs = tmp_path / "png"
    export_episode(episode, "png", pngs)
    Image.fromarray(moved).save(pngs / "shot_0000" / "track_000" / f"{FRAME:06d}.png")
    assert _correct(episode, "--pngs", pngs) == 0
    assert applied(shot_path(episode, SHOT))["applied"] == ["track_0000_frame_000020.json"]

    coco = tmp_path / "coco"
    export_episode(episode, "coco", coco)
    data = json.loads((coco / "instances.json").read_text())
    (a,) = [a for a in data["annotations"] if (a["image_id"], a["track_id"], a["shot_index"]) == (FRAME + 1, 1, SHOT)]
    a["segmentation"] = [[40, 40, 120, 40, 120, 120, 40, 120]]  # redrawn as a polygon
    (coco / "instances.json").write_text(json.dumps(data))
    assert _correct(episode, "--coco", coco / "instances.json") == 0
    files = applied(shot_path(episode, SHOT))["applied"]
    assert files == ["track_0000_frame_000020.json", "track_0001_frame_000020.json"]  # only the edited masks
    assert not validate(episode).problems
