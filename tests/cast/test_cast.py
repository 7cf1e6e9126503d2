"""The episode's cast: one character_id per character across shots, never two tracks
of one shot merged, stable ids under a re-run of one shot, schema versions 1 and 2."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from celmask.tasks.cast.cluster import cluster
from celmask.tasks.cast.enrol import load_enrolment, save_enrolment
from celmask.tasks.cast.episode import MIN_CONFIDENCE, THRESHOLD, compute_cast
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.eval.segment import matched_characters
from celmask.tasks.manifest.cast import characters_of, read_cast, read_cast_info, read_tracks, write_cast
from celmask.tasks.manifest.layout import CAST_NAME, SUCCESS_NAME, TRACKS_NAME, shot_path
from celmask.tasks.manifest.validate import validate
from celmask.tasks.manifest.write import write_shot, write_success
from celmask.tasks.synth import iter_truth_masks, load_truth
from celmask.tasks.video import iter_frames
from tests.support.enrolment import cast_folder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")


@pytest.fixture
def episode(manifest_episode, tmp_path):
    """A private copy of the shared 4 s episode (2 shots, exact detections), its cast computed."""
    return shutil.copytree(manifest_episode.dir, tmp_path / "out" / "ep7")


def problems(path) -> list[str]:
    return [str(p) for p in validate(path).problems]


def test_tracks_of_one_shot_never_merge_nor_two_anchors():
    same = np.zeros((4, 4))  # four items that look exactly alike
    result = cluster(same, groups=[0, 0, 1, 2], threshold=0.3)
    assert result.labels[0] != result.labels[1]
    assert len(set(result.labels)) == 2
    anchored = cluster(same, groups=[0, 1, 2, 3], threshold=0.3, anchors=["a", "b", None, None])
    assert anchored.labels[0] != anchored.labels[1] and set(anchored.labels) == {0, 1}


def test_a_track_as_close_to_two_characters_is_unsure_and_clear_ones_are_sure():
    """Null when unsure: a track (shot 2) about as far from two characters (each seen in
    shots 0 and 1) as they are from each other has a confidence under MIN_CONFIDENCE,
    so ``assign`` leaves it unassigned; the characters' own tracks are sure."""
    close, between, apart = 0.05, 0.25, 0.28
    d = np.full((5, 5), apart)
    d[0, 1] = d[1, 0] = d[2, 3] = d[3, 2] = close  # character A in shots 0 and 1, B likewise
    d[4, :] = d[:, 4] = between
    np.fill_diagonal(d, 0.0)
    result = cluster(d, groups=[0, 1, 0, 1, 2], threshold=THRESHOLD)
    assert result.labels[0] == result.labels[1] != result.labels[2] == result.labels[3]
    assert result.confidence[4] < MIN_CONFIDENCE, result.confidence
    assert min(result.confidence[:4]) >= MIN_CONFIDENCE, result.confidence


def test_every_track_gets_its_true_character_across_shots(episode, manifest_episode):
    tracks = read_tracks(episode)
    shown = {
        (i, int(t)) for i in (0, 1) for t in set(pq.read_table(shot_path(episode, i)).column("track_id").to_pylist())
    }
    assert {(t.shot_index, t.track_id) for t in tracks} == shown
    truth = matched_characters(episode, manifest_episode.video.parent)
    predicted = {(t.shot_index, t.track_id): t.character_id for t in tracks}
    assert len(set(truth.values())) >= 4 and sum(predicted[k] is not None for k in truth) >= 4
    for a in truth:
        for b in truth:
            if a[0] != b[0] and None not in (predicted[a], predicted[b]):
                assert (truth[a] == truth[b]) == (predicted[a] == predicted[b]), (a, b)
    assert all(t.character_confidence < MIN_CONFIDENCE for t in tracks if t.character_id is None)
    for shot in (0, 1):
        ids = [t.character_id for t in tracks if t.shot_index == shot and t.character_id is not None]
        assert len(ids) == len(set(ids))
    cast = read_cast(episode)
    assert [c.character_id for c in cast] == list(range(len(cast)))  # numbered by first appearance
    assert sorted(c.first_frame for c in cast) == [c.first_frame for c in cast]
    for c in cast:
        members = [t for t in tracks if t.character_id == c.character_id]
        assert c.tracks == len(members) and c.frames == sum(t.frames for t in members) and c.screen_time >= 0
        assert (c.keyframe_shot, c.keyframe_track) in {(t.shot_index, t.track_id) for t in members}
        assert len(c.signature) > 0 and abs(sum(c.signature) - 1) < 1e-3
    assert problems(episode) == []
    success = json.loads((episode / SUCCESS_NAME).read_text())
    assert success["schema_version"] == 2 and success["cast"]["characters"] == len(cast)


def test_the_cast_is_deterministic_and_reads_its_signatures_back(episode, manifest_episode):
    before = {name: (episode / name).read_bytes() for name in (TRACKS_NAME, CAST_NAME)}
    again = compute_cast(episode, None)  # no video: the kept signatures suffice
    assert again.decoded_shots == 0 and again.info["missing_signatures"] == []
    assert {name: (episode / name).read_bytes() for name in before} == before


def test_ids_stay_when_one_shot_is_rerun(episode, manifest_episode):
    # an earlier cast numbered these characters 7, 8, ...: a re-run of shot 1 keeps them
    tracks, cast, info = read_tracks(episode), read_cast(episode), read_cast_info(episode)
    old = {c.character_id: c.character_id + 7 for c in cast}
    write_cast(
        episode,
        [dataclasses.replace(t, character_id=old.get(t.character_id)) for t in tracks],
        [dataclasses.replace(c, character_id=old[c.character_id]) for c in cast],
        info,
    )
    e = manifest_episode
    other = dataclasses.replace(e.config, work_size=e.config.work_size + 1)  # another run's settings: new bytes
    write_shot(episode, e.segmentations[1], other, e.fingerprint)
    result = compute_cast(episode, e.video)
    assert result.decoded_shots == 1  # shot 0's signatures are kept
    after = {(t.shot_index, t.track_id): t.character_id for t in result.tracks}
    before = {(t.shot_index, t.track_id): old.get(t.character_id) for t in tracks}
    assert after == before
    # from nothing, the same episode numbers by first appearance again
    for name in (TRACKS_NAME, CAST_NAME):
        (episode / name).unlink()
    fresh = compute_cast(episode, e.video)
    assert sorted({t.character_id for t in fresh.tracks} - {None}) == list(range(len(fresh.cast)))


def test_validate_names_a_same_shot_merge_and_a_stale_cast(episode, manifest_episode):
    tracks, cast, info = read_tracks(episode), read_cast(episode), read_cast_info(episode)
    first = [t for t in tracks if t.shot_index == 1]
    assert len(first) >= 2
    merged = [dataclasses.replace(t, character_id=first[0].character_id) if t in first[:2] else t for t in tracks]
    write_cast(episode, merged, cast, info)
    assert any(f"tracks {first[0].track_id} and {first[1].track_id} are both character" in p for p in problems(episode))
    write_cast(episode, tracks, cast, {**info, "shots": {**info["shots"], "0": "0" * 32}})
    assert any("was made from other shot files than those there (shots [0])" in p for p in problems(episode))
    (episode / TRACKS_NAME).unlink()
    assert any(p.startswith(str(episode / TRACKS_NAME) + ": missing") for p in problems(episode))


def test_a_schema_version_1_episode_is_still_read(episode):
    for i in (0, 1):
        path = shot_path(episode, i)
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"celmask.schema_version": b"1"}), path)
    for name in (TRACKS_NAME, CAST_NAME):
        (episode / name).unlink()
    write_success(episode, 2)  # no cast counts, as celmask of version 1 wrote it
    content = json.loads((episode / SUCCESS_NAME).read_text())
    (episode / SUCCESS_NAME).write_text(json.dumps({**content, "schema_version": 1}))
    assert problems(episode) == [] and characters_of(episode) == {}
    (episode / SUCCESS_NAME).write_text(json.dumps({**content, "schema_version": 2}))
    assert any(p.startswith(str(episode / TRACKS_NAME) + ": missing") for p in problems(episode))


def test_enrolment_names_the_clusters(episode, manifest_episode, tmp_path):
    truth_dir = manifest_episode.video.parent
    truth = load_truth(truth_dir)
    shot = truth.shots[0]
    frame = (shot.start + shot.end) // 2
    image = next(iter_frames(manifest_episode.video, start=frame, end=frame + 1)).image
    _, ids, masks = next(iter_truth_masks(truth_dir, frame, frame + 1))
    for t, mask in zip(ids.tolist(), masks):
        character = next(x.character_id for x in shot.tracks if x.track_id == t)
        (tmp_path / "cast" / f"hero{character}").mkdir(parents=True)
        Image.fromarray(np.dstack([image, mask.astype(np.uint8) * 255])).save(
            tmp_path / "cast" / f"hero{character}" / "a.png"
        )
    save_enrolment(episode, load_enrolment(tmp_path / "cast"))
    result = compute_cast(episode, manifest_episode.video)
    matched = matched_characters(episode, truth_dir)
    names = {(t.shot_index, t.track_id): t.character for t in result.tracks}
    assert all(names[k] == f"hero{c}" for k, c in matched.items() if k[0] == 0)
    assert {c.character for c in result.cast} >= {f"hero{c}" for k, c in matched.items() if k[0] == 0}
    assert problems(episode) == [] or all("says the cast is" in p for p in problems(episode))
    with pytest.raises(CelmaskError, match="holds no character folders"):
        load_enrolment(tmp_path / "cast" / f"hero{character}")
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    with pytest.raises(CelmaskError, match="holds no reference images"):
        load_enrolment(tmp_path / "empty")


def test_coco_and_ytvis_carry_the_episode_identity(episode):
    from celmask.tasks.outputs.exports import export

    tracks = {(t.shot_index, t.track_id): t.character_id for t in read_tracks(episode)}
    for fmt, key in (("coco", "annotations"), ("ytvis", "annotations")):
        (done,) = export(episode, fmt)
        annotations = json.loads((done.path / "instances.json").read_text())[key]
        assert annotations and all(
            a["character_id"] == tracks[a["shot_index"] if fmt == "coco" else a["video_id"] - 1, a["track_id"]]
            for a in annotations
        )


def test_the_report_opens_with_the_cast_strip(episode):
    from celmask.tasks.outputs.report import write_report

    cast = read_cast(episode)
    page = write_report(episode).read_text()
    strip = page[page.index("<section class=cast>") : page.index('<section id="shot-')]
    assert strip.count("<figure") == len(cast)
    for c in cast:
        assert f'id="character-{c.character_id}"' in strip
        assert all(f'<a href="#shot-{i}">{i}</a>' in strip for i in c.shots)
        assert (episode / "_report" / "thumbs" / f"character_{c.character_id:03d}.jpg").is_file()
    assert ("<b>uncertain</b>" in strip) == any(c.uncertain for c in cast)


def test_exports_by_character(episode):
    from celmask.tasks.outputs.exports import export

    tracks = read_tracks(episode)
    chosen = next(t for t in tracks if t.character_id is not None)
    (done,) = export(episode, "png", character=str(chosen.character_id))
    assert done.path.name == f"png_character_{chosen.character_id:03d}"
    folders = {(p.parent.parent.name, p.parent.name) for p in done.path.rglob("*.png")}
    mine = {(t.shot_index, t.track_id) for t in tracks if t.character_id == chosen.character_id}
    assert folders == {(f"shot_{s:04d}", f"track_{t:03d}") for s, t in mine}
    assert done.files == sum(t.frames for t in tracks if t.character_id == chosen.character_id)
    with pytest.raises(CelmaskError, match="exports png and cutouts by character"):
        export(episode, "coco", character="0")
    with pytest.raises(CelmaskError, match="has no character '99'"):
        export(episode, "png", character="99")


def test_finalize_with_cast_names_the_characters(finished, tmp_path):
    from celmask.flows.cli import main as celmask

    out = shutil.copytree(finished.out, tmp_path / "out")
    episode = out / "ep"
    cast_folder(finished.video.parent, finished.video, tmp_path / "cast")
    assert celmask(["finalize", str(episode), "--cast", str(tmp_path / "cast")]) == 0
    names = {t.character for t in read_tracks(episode)} - {None}
    assert names and names <= {p.name for p in (tmp_path / "cast").iterdir()}
    assert (episode / "_run" / "enrolment.json").is_file()
    assert celmask(["finalize", str(episode)]) == 0  # the kept enrolment names them again
    assert {t.character for t in read_tracks(episode)} - {None} == names
    assert problems(episode) == []
    assert celmask(["finalize", str(episode), "--cast", str(tmp_path / "nowhere")]) == 2
