"""The mask manifest on a real segmentation of a generated episode: masks come back
exactly, at source resolution; files are deterministic, atomic and replaced one shot
at a time; the episode closes with its table and _SUCCESS.json; and validation finds
every kind of damage a consumer would trip on."""

from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_util

from celmask.flows.cli import main as celmask
from celmask.tasks.cast.episode import compute_cast
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import (
    decode_mask,
    rle_counts,
    rle_geometry,
    runs_string,
    window_runs,
)
from celmask.tasks.core.types import Source
from celmask.tasks.manifest.layout import SUCCESS_NAME, shot_path
from celmask.tasks.manifest.schema import (
    SCHEMA_VERSION,
    SHOT_SCHEMA,
    ShotSummary,
    dataset,
    iter_masks,
    read_episode_table,
    read_shot_meta,
    shot_files,
)
from celmask.tasks.manifest.validate import validate
from celmask.tasks.manifest.write import (
    upscale_mask,
    write_shot,
    write_success,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")  # numpy 2 vs pycocotools


@pytest.fixture
def segmented(manifest_episode):
    """(video, config, fingerprint, [ShotSegmentation per true shot]) of the shared 4 s episode."""
    e = manifest_episode
    return e.video, e.config, e.fingerprint, list(e.segmentations)


@pytest.fixture
def written(manifest_episode):
    """Its complete output tree OUT/ep7 (not to be damaged: see ``episode``) and the shots' summaries."""
    return manifest_episode.dir, list(manifest_episode.summaries)


@pytest.fixture
def episode(written, tmp_path):
    """A private copy of the complete episode, to damage."""
    return shutil.copytree(written[0], tmp_path / "out" / "ep7")


def rewrite(path, change):
    """Rewrite a shot file with ``change(table) -> table``, keeping its metadata."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def set_cell(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )


def problems(path) -> list[str]:
    return [str(p) for p in validate(path).problems]


# --------------------------------------------------------------------------- writing and reading


def test_masks_come_back_exactly_with_every_column(segmented, written):
    _, _, _, segs = segmented
    episode, _ = written
    table = dataset(episode).to_table()
    assert table.num_rows == sum(len(seg.instances[d]) for seg in segs for d in seg.drawing) > 0
    rows = iter(table.to_pylist())
    masks = iter(iter_masks(episode))
    for seg in segs:
        for frame, t, inst in seg.frames():
            for i in np.argsort(inst.track_id):
                row, (f, shot, track, mask) = next(rows), next(masks)
                expected = upscale_mask(inst.mask[i], seg.source_size)
                assert (
                    (f, shot, track)
                    == (row["frame_index"], row["shot_index"], row["track_id"])
                    == (frame, seg.shot.index, inst.track_id[i])
                )
                assert np.array_equal(mask, expected) and mask.shape == seg.source_size == (360, 640)
                coco = mask_util.decode({"size": [row["height"], row["width"]], "counts": row["mask_rle"]})
                assert np.array_equal(coco, expected)
                x, y, w, h = cv2.boundingRect(expected.astype(np.uint8))
                assert row["bbox"] == [x, y, w, h] and row["area"] == expected.sum()
                assert row["pts_time"] == t and row["score"] == pytest.approx(float(inst.score[i]))
                assert row["source"] == Source(int(inst.data["source"][i])).label and row["label"] == "character"
                key = int(inst.data["keyframe_frame"][i])
                assert row["keyframe_frame"] == key and row["keyframe_distance"] == abs(frame - key)
                assert row["is_keyframe"] == (bool(inst.data["is_keyframe"][i]) and frame == key)
    assert next(rows, None) is None and next(masks, None) is None
    keyframes = {(c.track_id, c.frame_index) for seg in segs for cs in seg.keyframes.values() for c in cs}
    marked = table.filter(table.column("is_keyframe"))
    assert set(zip(marked.column("track_id").to_pylist(), marked.column("frame_index").to_pylist())) == keyframes


def test_masks_of_one_frame_or_one_track(segmented, written):
    _, _, _, segs = segmented
    episode, _ = written
    seg = segs[-1]
    frame, _, inst = list(seg.frames())[3]
    got = list(iter_masks(episode, frame=frame))
    assert [(f, s, t) for f, s, t, _ in got] == [(frame, seg.shot.index, t) for t in sorted(inst.track_id)]
    track = int(inst.track_id[0])
    along = list(iter_masks(episode, track=(seg.shot.index, track)))
    assert [f for f, *_ in along] == [f for f, _, i in seg.frames() if track in i.track_id]
    assert along[0][3] is along[1][3] or seg.drawing[0] != seg.drawing[1]  # a held frame reuses its decoded mask
    assert not along[0][3].flags.writeable
    assert [f for f, *_ in iter_masks(episode, frame=frame, track=(seg.shot.index, track))] == [frame]
    assert list(iter_masks(episode, frame=10**6)) == [] and list(iter_masks(episode, track=(99, 0))) == []
    with pytest.raises(CelmaskError, match="output tree"):
        next(iter_masks(episode.parent, frame=frame))


def test_pyarrow_reads_the_files_as_one_dataset(written):
    episode, summaries = written
    total = sum(s.rows for s in summaries)
    assert pq.read_table(episode / "shots").num_rows == total  # what pandas.read_parquet does
    assert (
        pq.read_table(episode.parent).num_rows == dataset(episode.parent).count_rows() == total
    )  # the table's "_" hides it
    schema = pq.read_schema(shot_path(episode, 0))
    assert schema.metadata[b"celmask.schema_version"] == str(SCHEMA_VERSION).encode()
    meta = read_shot_meta(shot_path(episode, 0))
    assert meta.episode_id == "ep7" and meta.shot.index == 0 and meta.labels == ("character",)
    assert set(meta.models) == {"detector", "propagator", "refiner"} and "sha256:" in meta.models["detector"]
    assert json.loads(meta.config_json)["detector"] == "file" and len(meta.config_hash) == 64
    assert meta.video_fingerprint.startswith("b2s1:") and meta.source_size == (360, 640)
    group = pq.ParquetFile(shot_path(episode, 0)).metadata.row_group(0)
    assert "RLE_DICTIONARY" in group.column(SHOT_SCHEMA.get_field_index("mask_rle")).encodings


def test_upscaling_to_a_2x_source(segmented, tmp_path):
    _, config, fingerprint, segs = segmented
    seg = dataclasses.replace(segs[-1], source_size=(720, 1280))
    write_shot(tmp_path / "ep", seg, config, fingerprint)
    assert not [
        p for p in problems(tmp_path / "ep") if "shot_0001" in p
    ]  # the upscaled file is valid (shot 0 is missing)
    work_masks = [inst.mask[i] for _, _, inst in seg.frames() for i in np.argsort(inst.track_id)]
    for small, (_, _, _, big) in zip(work_masks, iter_masks(tmp_path / "ep"), strict=True):
        assert big.shape == (720, 1280)
        assert np.array_equal(big, upscale_mask(small, (720, 1280)))
        assert abs(int(big.sum()) - 4 * int(small.sum())) <= 0.05 * 4 * small.sum() + 8
        nearest = np.kron(small, np.ones((2, 2), bool)).view(np.uint8)
        kernel = np.ones((5, 5), np.uint8)
        outline = cv2.dilate(nearest, kernel) > cv2.erode(nearest, kernel)
        assert not ((big ^ nearest.view(bool)) & ~outline).any()  # smoothing moves only outline pixels


def test_upscaling_smooths_stairs_and_keeps_thin_parts():
    yy, xx = np.mgrid[:200, :200]
    truth = (yy - 100) ** 2 + (xx - 100) ** 2 < 70**2
    small = cv2.resize(truth.astype(np.float32), (100, 100), interpolation=cv2.INTER_AREA) >= 0.5
    nearest = np.kron(small, np.ones((2, 2), bool))
    smooth = upscale_mask(small, (200, 200))
    assert (smooth ^ truth).sum() < 0.8 * (nearest ^ truth).sum()
    thin = np.zeros((20, 20), bool)
    thin[5, 5] = True
    thin[np.arange(8, 18), np.arange(8, 18)] = True
    assert np.array_equal(upscale_mask(thin, (40, 40)), np.kron(thin, np.ones((2, 2), bool)))
    assert not upscale_mask(np.zeros((20, 20), bool), (40, 40)).any()


def test_rle_codec_agrees_with_pycocotools_and_rejects_corruption():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.random()
        mask[:, int(rng.integers(0, w))] = rng.random() < 0.5  # runs across column ends
        coco = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) if len(ys) else (0, 0, 0, 0)
        counts = runs_string(window_runs(mask[box[0] : box[1], box[2] : box[3]], box[0], box[2], h, w), h, w)
        assert counts.encode() == coco["counts"]
        assert np.array_equal(decode_mask(counts, h, w), mask)
        area, bbox = rle_geometry(rle_counts(counts, h, w), h)
        assert area == mask.sum() and list(bbox) == mask_util.toBbox(coco).astype(int).tolist()
    good = runs_string(window_runs(np.ones((3, 3), bool), 2, 2, 8, 8), 8, 8)
    for bad, why in (
        (good[:-1] + "~", "outside"),
        (good + "0", "cover"),
        ("", "empty"),
        (good[:-1] + "h", "cut off"),
        ("é", "outside"),
    ):
        with pytest.raises(ValueError, match=why):
            decode_mask(bad, 8, 8)


# --------------------------------------------------------------------------- files


def test_same_input_same_bytes(segmented, written, tmp_path):
    _, config, fingerprint, segs = segmented
    write_shot(tmp_path / "ep7", segs[0], config, fingerprint)
    assert shot_path(tmp_path / "ep7", 0).read_bytes() == shot_path(written[0], 0).read_bytes()


def test_a_crash_mid_write_leaves_the_old_file_and_no_stray(segmented, episode, monkeypatch):
    _, config, fingerprint, segs = segmented
    before = {p.name: p.read_bytes() for p in (episode / "shots").iterdir()}
    calls = []

    def crash(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("worker died")
        return real(*args)

    import celmask.tasks.manifest.write as mw

    real = mw.runs_string
    monkeypatch.setattr(mw, "runs_string", crash)
    with pytest.raises(RuntimeError, match="worker died"):
        write_shot(episode, dataclasses.replace(segs[0], source_size=(720, 1280)), config, fingerprint)
    assert {p.name: p.read_bytes() for p in (episode / "shots").iterdir()} == before
    shutil.rmtree(episode / "shots")
    calls.clear()
    with pytest.raises(RuntimeError):
        write_shot(episode, segs[0], config, fingerprint)
    assert list((episode / "shots").iterdir()) == []
    # a killed writer leaves its hidden temporary file: no reader takes it for a shot
    monkeypatch.undo()
    write_shot(episode, segs[1], config, fingerprint)
    killed = episode / "shots" / ".shot_0000.parquet.4242-0badf00d.partial"
    killed.write_bytes(shot_path(episode, 1).read_bytes()[:500])
    assert shot_files(episode) == {1: shot_path(episode, 1)}
    assert pq.read_table(episode / "shots").num_rows == dataset(episode).count_rows() > 0
    assert not [p for p in problems(episode) if "partial" in p]


def test_rerunning_one_shot_replaces_only_that_file(segmented, episode):
    _, config, fingerprint, segs = segmented
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in shot_files(episode).values()}
    fewer = dataclasses.replace(
        segs[1], instances=[inst[inst.track_id != inst.track_id.min()] for inst in segs[1].instances]
    )
    write_shot(episode, fewer, config, fingerprint)
    after = {p: (p.stat().st_ino, p.read_bytes()) for p in shot_files(episode).values()}
    assert after.keys() == before.keys()
    assert [p.name for p in before if after[p] != before[p]] == ["shot_0001.parquet"]
    found = problems(episode)  # _SUCCESS.json and the cast are stale
    assert len(found) == 2 and "disagrees" in found[0] and "was made from other shot files" in found[1]
    write_success(episode, 2, cast=compute_cast(episode, segmented[0]).summary)
    assert problems(episode) == []


def test_episode_table_and_success(segmented, written):
    _, _, _, segs = segmented
    episode, summaries = written
    table = read_episode_table(episode)
    assert table == summaries
    assert [ShotSummary.from_dict(json.loads(json.dumps(s.to_dict()))) for s in summaries] == summaries
    for seg, s in zip(segs, table):
        assert (s.shot, s.status, s.frames, s.drawings) == (seg.shot, "ok", seg.shot.frame_count, len(seg.instances))
        assert s.tracks == len({t for inst in seg.instances for t in inst.track_id}) and s.tracks > 0
        assert {(k.track_id, k.frame_index) for k in s.keyframes} == {
            (c.track_id, c.frame_index) for cs in seg.keyframes.values() for c in cs
        }
        assert all(set(k.components) >= {"confidence", "quality"} for k in s.keyframes)
        assert set(s.seconds) >= {"decode", "detect", "manifest"}
    raw = pq.read_table(episode / "_episode.parquet")
    assert json.loads(raw.column("keyframes")[0].as_py())[0]["components"]
    success = json.loads((episode / SUCCESS_NAME).read_text())
    assert (success["shots"], success["frames"], success["rows"]) == (2, 96, sum(s.rows for s in summaries))
    assert (
        success["seconds"]["manifest"] > 0
        and success["versions"]["celmask"]
        and success["schema_version"] == SCHEMA_VERSION
    )
    failed = ShotSummary.failed("ep7", segs[0].shot, "CUDA out of memory", {"detect": 1.5})
    assert ShotSummary.from_row(failed.to_row()) == failed and failed.to_row()["status"] == "failed"


def test_success_only_once_every_shot_is_written(segmented, tmp_path):
    _, config, fingerprint, segs = segmented
    episode = tmp_path / "ep"
    write_shot(episode, segs[0], config, fingerprint)
    with pytest.raises(CelmaskError, match="shot_0001.parquet: missing"):
        write_success(episode, 2)
    assert not (episode / SUCCESS_NAME).exists()
    write_shot(episode, segs[1], config, fingerprint)
    assert write_success(episode, 2)["shots"] == 2 and (episode / SUCCESS_NAME).exists()
    shot_path(episode, 1).unlink()
    with pytest.raises(CelmaskError):
        write_success(episode, 2)
    assert not (episode / SUCCESS_NAME).exists()  # a stale success goes


def test_an_unknown_schema_version_is_refused(episode):
    path = shot_path(episode, 0)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"celmask.schema_version": b"99"}), path)
    for read in (read_shot_meta, lambda p: dataset(p.parent.parent)):
        with pytest.raises(CelmaskError, match="schema version 99; this celmask reads version 1"):
            read(path)
    assert any("schema version 99" in p for p in problems(episode))


# --------------------------------------------------------------------------- validation


def test_a_good_output_validates_clean(written):
    episode, summaries = written
    result = validate(episode.parent)
    assert result.problems == []
    assert (result.episodes, result.shots, result.frames, result.rows) == (1, 2, 96, sum(s.rows for s in summaries))
    assert 0 < result.masks <= result.rows


def truncate(episode):
    path = shot_path(episode, 1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def foreign(episode):
    pq.write_table(pa.table({"frame": [1, 2], "mask": ["a", "b"]}), shot_path(episode, 1))


def wrong_columns(episode):
    rewrite(shot_path(episode, 1), lambda t: t.drop_columns(["score"]))


def corrupt_rle(episode):
    rewrite(shot_path(episode, 1), lambda t: set_cell(t, "mask_rle", 2, t.column("mask_rle")[2].as_py()[:-3] + "zz"))


def wrong_bbox(episode):
    rewrite(shot_path(episode, 1), lambda t: set_cell(t, "bbox", 0, [0, 0, 5, 5]))


def duplicate_row(episode):
    rewrite(shot_path(episode, 1), lambda t: pa.concat_tables([t.slice(0, 1), t]))


def outside_range(episode):
    rewrite(shot_path(episode, 1), lambda t: set_cell(t, "frame_index", t.num_rows - 1, 500))


def missing_shot(episode):
    shot_path(episode, 1).unlink()


def stale_success(episode):
    success = json.loads((episode / SUCCESS_NAME).read_text())
    (episode / SUCCESS_NAME).write_text(json.dumps({**success, "rows": 3}))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (truncate, "shots/shot_0001.parquet: not a readable Parquet file, truncated or corrupt"),
        (foreign, "shots/shot_0001.parquet: not a celmask shot file (no celmask.schema_version metadata)"),
        (
            wrong_columns,
            f"shots/shot_0001.parquet: columns do not match schema version {SCHEMA_VERSION}: no column score; re-run the shot",
        ),
        (corrupt_rle, "shots/shot_0001.parquet: 1 row(s) whose mask_rle is not a valid RLE of 640x360"),
        (
            wrong_bbox,
            "shots/shot_0001.parquet: 1 row(s) whose bbox is not the mask's (x, y, w, h) (first: frame 80 track",
        ),
        (
            duplicate_row,
            "shots/shot_0001.parquet: 1 row(s) repeating a (frame, track) already in the shot (first: frame 80",
        ),
        (outside_range, "shots/shot_0001.parquet: 1 row(s) outside the shot's frames [80, 96) (first: frame 500"),
        (missing_shot, "shots/shot_0001.parquet: missing; re-run shot 1 of 2"),
        (stale_success, "_SUCCESS.json: disagrees with the shot files: rows 3 but the files hold"),
    ],
)
def test_validate_names_each_damage_on_one_line(episode, damage, expected):
    damage(episode)
    found = problems(episode)
    assert any(expected in p for p in found), found
    assert all("\n" not in p for p in found)


def test_validate_command_exit_codes(written, episode, tmp_path, capsys):
    assert celmask(["validate", str(written[0].parent)]) == 0
    out = capsys.readouterr().out
    assert "1 episode, 2 shots" in out and "no problems" in out
    corrupt_rle(episode)
    assert celmask(["validate", str(episode)]) == 1
    out = capsys.readouterr().out
    assert "1 problem" in out and "mask_rle is not a valid RLE" in out
    assert celmask(["validate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err
