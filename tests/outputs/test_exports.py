"""Exports of a real manifest (a generated episode, segmented and written), read back
by the tools their users use: PIL for the PNGs, pycocotools for COCO and YouTube-VIS,
ffprobe for the previews. Every mask must equal the manifest's; exports are
deterministic, replace an earlier export whole, and refuse a video that is not the
episode's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from celmask.flows.cli import main as celmask
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.read import iter_shots
from celmask.tasks.manifest.schema import iter_masks
from celmask.tasks.outputs.exports import DAVIS_PALETTE, export
from celmask.tasks.outputs.preview import PREVIEW_WIDTH
from celmask.tasks.video import iter_frames, probe

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # numpy 2 vs pycocotools


@pytest.fixture
def episode(manifest_episode):
    """The shared segmented episode (tests/support/episodes.py): OUT/ep7 and its video."""
    return manifest_episode


def manifest_masks(episode_dir: Path) -> dict[tuple[int, int], np.ndarray]:
    """(frame, track) -> mask, of the whole (small) test episode."""
    return {(f, t): m for f, _, t, m in iter_masks(episode_dir)}


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_png_is_one_mask_per_track_and_frame(episode, tmp_path):
    (result,) = export(episode.dir.parent, "png", to=tmp_path)
    masks = manifest_masks(episode.dir)
    assert result.path == tmp_path / "ep7" / "png" and result.files == len(masks) > 0
    files = sorted(result.path.rglob("*.png"))
    assert len(files) == len(masks)
    for (frame, track), mask in masks.items():
        with Image.open(
            result.path / f"shot_{int(frame >= 80):04d}" / f"track_{track:03d}" / f"{frame:06d}.png"
        ) as image:
            assert image.mode == "1" and image.size == (640, 360)
            assert np.array_equal(np.array(image), mask)


def test_palette_is_one_davis_png_per_frame(episode, tmp_path):
    (result,) = export(episode.dir, "palette", to=tmp_path)
    masks = manifest_masks(episode.dir)
    assert result.files == 96 == len(list(result.path.rglob("*.png")))
    for frame in (0, 40, 79, 80, 88, 95):
        with Image.open(result.path / f"shot_{int(frame >= 80):04d}" / f"{frame:06d}.png") as image:
            assert image.mode == "P"
            assert image.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0] == DAVIS_PALETTE[:9]
            index = np.array(image)
        expected = np.zeros((360, 640), np.uint8)
        for (f, track), mask in sorted(masks.items()):
            if f == frame:
                expected[mask] = track + 1
        assert np.array_equal(index, expected)
    assert len(np.unique(index)) > 2  # frame 95 shows several characters


def test_cutouts_are_rgba_with_the_mask_as_alpha(episode, tmp_path):
    (result,) = export(episode.dir, "cutouts", to=tmp_path, video=episode.video)
    frames = {f.index: f.image for f in iter_frames(episode.video)}
    expected = 0
    for shot in iter_shots(episode.dir):
        before: dict[int, str] = {}
        for frame, rows in shot.frames():
            for row in rows:
                path = (
                    result.path / f"shot_{shot.meta.shot.index:04d}" / f"track_{row.track_id:03d}" / f"{frame:06d}.png"
                )
                held = before.get(row.track_id) == row.rle
                assert path.exists() != held, path  # one cut-out per drawing, none for its held frames
                if held:
                    continue
                expected += 1
                x, y, w, h = row.bbox
                with Image.open(path) as image:
                    assert image.mode == "RGBA" and image.size == (w, h)
                    rgba = np.array(image)
                alpha = shot.mask(row.rle)[y : y + h, x : x + w]
                assert np.array_equal(rgba[..., 3] > 0, alpha) and set(np.unique(rgba[..., 3])) <= {0, 255}
                assert np.array_equal(rgba[..., :3][alpha], frames[frame][y : y + h, x : x + w][alpha])
                assert not rgba[..., :3][~alpha].any()
            before = {r.track_id: r.rle for r in rows}
    assert result.files == expected == len(list(result.path.rglob("*.png"))) > 0


def test_coco_loads_in_pycocotools_and_every_mask_is_the_manifests(episode, tmp_path):
    (result,) = export(episode.dir, "coco", to=tmp_path)
    coco = COCO(str(result.path / "instances.json"))
    masks = manifest_masks(episode.dir)
    assert len(coco.imgs) == 96 and coco.imgs[1]["file_name"] == "000000.jpg"
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["character"]
    assert len(coco.anns) == len(masks)
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        mask = masks[(image["frame_index"], ann["track_id"])]
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0 and ann["shot_index"] == image["shot_index"]
    frame_95 = coco.getAnnIds(imgIds=[96])
    assert len(frame_95) == sum(f == 95 for f, _ in masks) > 1


def test_ytvis_has_one_video_per_shot_and_a_mask_per_track_frame(episode, tmp_path):
    (result,) = export(episode.dir, "ytvis", to=tmp_path)
    data = json.loads((result.path / "instances.json").read_text())
    masks = manifest_masks(episode.dir)
    assert [(v["id"], v["length"], v["file_names"][0]) for v in data["videos"]] == [
        (1, 80, "000000.jpg"),
        (2, 16, "000080.jpg"),
    ]
    seen = 0
    for ann in data["annotations"]:
        video = data["videos"][ann["video_id"] - 1]
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == video["length"]
        for i, segmentation in enumerate(ann["segmentations"]):
            key = (int(Path(video["file_names"][i]).stem), ann["track_id"])
            if segmentation is None:
                assert key not in masks
                continue
            seen += 1
            assert np.array_equal(mask_util.decode(segmentation).astype(bool), masks[key])
    assert seen == len(masks)
    assert sorted((a["video_id"], a["track_id"]) for a in data["annotations"]) == sorted(
        {(1 + (f >= 80), t) for f, t in masks}
    )


def test_preview_has_a_frame_per_frame_of_the_shot_and_marks_keyframes(episode, tmp_path):
    (result,) = export(episode.dir, "preview", to=tmp_path, video=episode.video)
    assert result.files == 2
    for shot in iter_shots(episode.dir):
        path = result.path / f"shot_{shot.meta.shot.index:04d}.mp4"
        info = probe(path)
        assert info.frame_count == shot.meta.shot.frame_count and info.frame_count_exact
        assert (info.width, info.height) == (PREVIEW_WIDTH, 360) and info.codec == "h264"
        keyframe = next(r for r in shot.rows if r.is_keyframe)
        image = next(iter_frames(path, start=keyframe.frame_index - shot.meta.shot.start)).image
        x, y, w, h = keyframe.bbox
        near = image[max(0, y - 12) : y + h + 2, max(0, x - 2) : x + w + 2].astype(int)
        yellow = (near[..., 0] > 200) & (near[..., 1] > 200) & (near[..., 2] < 100)
        assert yellow.sum() > 20  # the KEY outline and tag


def test_exports_are_deterministic_and_replace_the_previous_one_whole(episode, tmp_path):
    first = {
        fmt: tree_digest(export(episode.dir, fmt, to=tmp_path / "a", video=episode.video)[0].path)
        for fmt in ("png", "coco", "preview")
    }
    second = {
        fmt: tree_digest(export(episode.dir, fmt, to=tmp_path / "b", video=episode.video)[0].path)
        for fmt in ("png", "coco", "preview")
    }
    assert first == second
    dest = tmp_path / "a" / "ep7"
    export(episode.dir, "coco", to=tmp_path / "a")  # again, over the first
    assert tree_digest(dest / "coco") == first["coco"]
    assert sorted(p.name for p in dest.iterdir()) == ["coco", "png", "preview"]  # no partial or old directories left


def test_a_video_that_is_not_the_episodes_is_refused_and_nothing_is_written(episode, clip, tmp_path):
    with pytest.raises(CelmaskError, match="is not the video episode ep7 was segmented from"):
        export(episode.dir, "cutouts", to=tmp_path, video=clip("base.mp4"))
    assert not (tmp_path / "ep7").exists()  # not even the folder a failed export made (issue 13)


def test_export_command(episode, tmp_path, capsys):
    out = str(episode.dir.parent)
    assert celmask(["export", out, "--format", "ytvis", "--to", str(tmp_path)]) == 0
    assert f"ep7: wrote {tmp_path / 'ep7' / 'ytvis'} (1 file, " in capsys.readouterr().out
    for argv, message in [
        (["--format", "cutouts"], "--video: --format cutouts needs the source video's pixels"),
        (["--format", "gif"], "--format: unknown format 'gif'; use one of png, palette, cutouts, coco, ytvis, preview"),
        (["--format", "png", "--episode", "ep8"], "--episode: " + out + " has no episode 'ep8'; use one of ep7"),
    ]:
        assert celmask(["export", out, *argv, "--to", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"celmask: error: {message}") and err.count("\n") == 1, err
    assert celmask(["export", str(tmp_path / "nowhere"), "--format", "png"]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err


def test_export_reads_the_video_the_episodes_run_recorded(finished, tmp_path, capsys):
    """The README: the video defaults to the one the episode's run recorded (cut-outs
    need its pixels); once that file has changed, the export asks for --video instead."""
    out = str(finished.out)
    assert celmask(["export", out, "--format", "cutouts", "--to", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    cutouts = sorted((tmp_path / "a" / "ep" / "cutouts").rglob("*.png"))
    assert cutouts and all(Image.open(p).mode == "RGBA" for p in cutouts[:3])
    moved = tmp_path / "src"
    moved.mkdir()
    copy = moved / finished.video.name
    copy.write_bytes(finished.video.read_bytes())
    finished.video.rename(tmp_path / "away.mp4")  # the recorded file is gone
    try:
        assert celmask(["export", out, "--format", "cutouts", "--to", str(tmp_path / "b")]) == 2
        assert "--video: --format cutouts needs the source video's pixels" in capsys.readouterr().err
        assert celmask(["export", out, "--format", "cutouts", "--to", str(tmp_path / "b"), "--video", str(copy)]) == 0
    finally:
        (tmp_path / "away.mp4").rename(finished.video)
