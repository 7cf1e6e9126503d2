"""Tests of the synthetic episode generator (celmask.tasks.synth).

The main fixture renders seed 144 for 20 s (480 frames); that seed was picked because
its plan has a dissolve, a fade, white and black flashes, subtitles, a close-up, an
empty shot, several characters, characters entering or leaving, and a held still. If a generator change moves those
features, ``test_fixture_covers_the_features`` says so: pick a new seed with
``plan_timeline`` (cheap, no rendering).
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_util

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth import (
    background_plate,
    generate_episode,
    iter_truth_masks,
    load_truth,
    plan_timeline,
    render_frames,
)
from celmask.tasks.synth.characters import Pose, random_design
from celmask.tasks.synth.palette import shade
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.sprites import draw_character, paste_sprite

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.mask")  # numpy 2 vs pycocotools

FPS = Fraction(24000, 1001)
SEED = 144
DURATION = 20.0
W, H = 640, 360


def _decode(mp4: Path, w: int = W, h: int = H) -> np.ndarray:
    """All frames of ``mp4`` as (n, h, w, 3) uint8, via ffmpeg rawvideo."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def _keyframes(mp4: Path) -> set[int]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pict_type",
            "-of",
            "csv=p=0",
            str(mp4),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {i for i, p in enumerate(out) if p.startswith("I")}


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ep_a")
    generate_episode(out, seed=SEED, duration=DURATION)
    return out


@pytest.fixture(scope="module")
def episode_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ep_b")
    generate_episode(out, seed=SEED, duration=DURATION)
    return out


@pytest.fixture(scope="module")
def plan():
    return plan_timeline(SEED, frame_count=int(round(Fraction(DURATION) * FPS)), width=W, height=H, fps=FPS)


@pytest.fixture(scope="module")
def video(episode: Path) -> np.ndarray:
    return _decode(episode / "episode.mp4")


def _spans(truth) -> set[int]:
    """Frames inside gradual transitions, plus every shot's first frame."""
    out = {s.start for s in truth.shots}
    for s in truth.shots:
        out |= set(range(s.transition_start, s.transition_end))
    return out


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_frames(episode: Path, episode_again: Path, video: np.ndarray) -> None:
    for name in ("truth.json", "masks.parquet", "episode.mp4"):
        assert (episode / name).read_bytes() == (episode_again / name).read_bytes(), name
    assert np.array_equal(video, _decode(episode_again / "episode.mp4"))


def test_other_seed_differs(tmp_path: Path, episode: Path, video: np.ndarray) -> None:
    other = generate_episode(tmp_path, seed=SEED + 1, duration=4.0)
    ours = load_truth(episode)
    assert [(s.start, s.end) for s in other.shots] != [
        (s.start, s.end) for s in ours.shots if s.end <= other.frame_count
    ]
    b = _decode(tmp_path / "episode.mp4")
    assert np.abs(video[: len(b)].astype(np.int16) - b.astype(np.int16)).mean() > 5.0


def test_plan_is_deterministic() -> None:
    a = plan_timeline(5, frame_count=300, width=W, height=H, fps=FPS)
    b = plan_timeline(5, frame_count=300, width=W, height=H, fps=FPS)
    assert a == b
    assert a != plan_timeline(6, frame_count=300, width=W, height=H, fps=FPS)


# --------------------------------------------------------------------------- truth


def test_fixture_covers_the_features(episode: Path) -> None:
    truth = load_truth(episode)
    kinds = {s.transition for s in truth.shots}
    assert {"start", "cut", "fade", "dissolve"} <= kinds
    assert {"white", "black"} <= {f.kind for f in truth.flashes}
    assert any(s.subtitles for s in truth.shots)
    assert any(s.closeup for s in truth.shots)
    assert any(s.n_characters == 0 for s in truth.shots)
    assert any(s.n_characters >= 2 for s in truth.shots)
    assert any(b - a >= 24 for a, b in truth.holds)  # a still held for a second or more


def test_truth_round_trips_and_tiles(episode: Path) -> None:
    truth = load_truth(episode)
    text = (episode / "truth.json").read_text()
    assert text == truth.to_json()
    d = json.loads(text)
    assert d["fps"] == "24000/1001" and d["seed"] == SEED and d["frame_count"] == 480
    assert truth.frame_count == int(round(DURATION * 24000 / 1001))
    pos = 0
    for i, s in enumerate(truth.shots):
        assert (s.index, s.start) == (i, pos) and s.end > s.start
        pos = s.end
        if s.transition in ("start", "cut"):
            assert s.transition_start == s.transition_end == s.start
        else:
            n = s.transition_end - s.transition_start
            assert s.start == s.transition_start + n // 2  # the boundary is the span's middle frame
            assert truth.shots[i - 1].start < s.transition_start and s.transition_end < s.end
    assert pos == truth.frame_count
    assert truth.shots[0].transition == "start"
    assert not (episode / ".episode.mp4.partial").exists() and not (episode / ".masks.parquet.partial").exists()


@pytest.mark.parametrize("seed", range(6))
def test_plan_rules(seed: int) -> None:
    plan = plan_timeline(seed, frame_count=1439, width=W, height=H, fps=FPS)
    shots = plan.shots
    assert shots[0].start == 0 and shots[-1].end == 1439
    for k, s in enumerate(shots):
        assert 12 <= s.end - s.start <= int(10.6 * 24)
        t = s.transition
        if t.kind == "dissolve":
            assert 8 <= t.span[1] - t.span[0] <= 30
        if t.kind == "fade":
            assert 6 <= t.fade_out <= 18 and 0 <= t.black <= 6 and 6 <= t.fade_in <= 18
        # Drawings are held 2-3 frames, except for held stills.
        held = {a for a, _ in s.still_spans}
        steps = np.diff(list(s.drawings) + [s.content_end - s.content_start])
        for j, (start, step) in enumerate(zip(s.drawings, steps)):
            last = j == len(s.drawings) - 1
            assert start in held or step in (2, 3) or (last and step == 1), (k, start, step)
        assert len(s.characters) <= 4
        for c in s.characters:
            assert len(c.pose_of_drawing) == len(c.anchor_of_drawing) == len(s.drawings)
        # Flashes: inside the shot, away from its boundaries and transition spans.
        lo = max(s.start, t.span[1])
        hi = min(s.end, shots[k + 1].transition.span[0]) if k + 1 < len(shots) else s.end
        for f in s.flashes:
            assert lo + 6 <= f.frame < hi - 6, (k, f, lo, hi)
        for sub in s.subtitles:
            assert lo <= sub.start < sub.end <= hi


def test_episodes_vary_over_seeds() -> None:
    """Over a few 60 s plans every transition, timing and shot kind shows up, and
    consecutive shots sometimes share a set and characters."""
    kinds, timings, shot_kinds, flashes = set(), set(), set(), set()
    same_set = same_cast = 0
    for seed in range(4):
        plan = plan_timeline(seed, frame_count=1439, width=W, height=H, fps=FPS)
        for a, b in zip(plan.shots, plan.shots[1:]):
            same_set += a.set_id == b.set_id
            same_cast += bool({c.character_id for c in a.characters} & {c.character_id for c in b.characters})
        for s in plan.shots:
            kinds.add(s.transition.kind)
            timings.add(s.timing)
            shot_kinds.add(s.kind)
            flashes |= {f.kind for f in s.flashes}
    assert kinds == {"start", "cut", "fade", "dissolve"}
    assert timings == {"2s", "3s", "mixed", "still"}
    assert shot_kinds == {"empty", "wide", "full", "medium", "closeup"}
    assert flashes == {"white", "black", "whiten"}
    assert same_set >= 5 and same_cast >= 5


# --------------------------------------------------------------------------- video


def test_video_probes_right(episode: Path) -> None:
    entries = "stream=codec_name,width,height,r_frame_rate,pix_fmt,nb_read_frames"
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", entries, "-of", "json"]
    out = subprocess.run([*cmd, str(episode / "episode.mp4")], capture_output=True, text=True, check=True).stdout
    st = json.loads(out)["streams"][0]
    assert st["codec_name"] == "h264" and st["pix_fmt"] == "yuv420p"
    assert (st["width"], st["height"]) == (W, H)
    assert st["r_frame_rate"] == "24000/1001"
    assert int(st["nb_read_frames"]) == load_truth(episode).frame_count
    assert len(_keyframes(episode / "episode.mp4")) >= 480 // 48


def test_flash_frames_look_like_flashes(episode: Path, video: np.ndarray) -> None:
    truth = load_truth(episode)
    assert truth.flashes
    for f in truth.flashes:
        mean = video[f.frame].mean()
        if f.kind == "white":
            assert mean > 245
        elif f.kind == "black":
            assert mean < 10
        else:
            assert mean > 180 and video[f.frame].std() > 2  # whitened, but the picture shows through
        for g in (f.frame - 6, f.frame + 6):  # flashes return to the same shot
            assert truth.shot_at(g).index == truth.shot_at(f.frame).index


def test_holds_are_identical_and_drawing_changes_are_not(episode: Path, video: np.ndarray) -> None:
    truth = load_truth(episode)
    keys = _keyframes(episode / "episode.mp4")
    skip = _spans(truth) | {f.frame for f in truth.flashes} | {f.frame + 1 for f in truth.flashes}
    held = {f for a, b in truth.holds for f in range(a + 1, b)}
    assert all(b - a >= 2 for a, b in truth.holds)
    assert len(held) > truth.frame_count // 3  # animation on 2s/3s: most frames repeat
    v = video.astype(np.int16)
    n_checked = 0
    for f in range(1, truth.frame_count):
        if f in skip or f - 1 in skip:
            continue
        diff = np.abs(v[f] - v[f - 1])
        if f in held:
            # Only compression noise; a keyframe re-encodes the picture, which is noisier.
            assert diff.mean() < (3.0 if f in keys else 1.0), f
            n_checked += 1
        else:
            assert diff.max() >= 12 and (diff.max(axis=2) >= 12).sum() >= 8, f
    assert n_checked > 100


# --------------------------------------------------------------------------- masks


def test_mask_rows_are_well_formed(episode: Path) -> None:
    truth = load_truth(episode)
    table = pq.read_table(episode / "masks.parquet")
    assert table.num_rows > 0
    d = table.to_pydict()
    keys = list(zip(d["frame_index"], d["track_id"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert set(d["label"]) == {"character"}
    assert set(d["height"]) == {H} and set(d["width"]) == {W}
    full_flash = {f.frame for f in truth.flashes if f.kind in ("white", "black")}
    assert not full_flash & set(d["frame_index"])
    for i in range(0, table.num_rows, 7):
        m = mask_util.decode({"size": [H, W], "counts": d["mask_rle"][i].encode()})
        assert m.shape == (H, W)
        assert int(m.sum()) == d["area"][i] >= 20
        ys, xs = np.nonzero(m)
        assert list(d["bbox"][i]) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    for s in truth.shots:
        rows = [i for i, sh in enumerate(d["shot_index"]) if sh == s.index]
        assert sorted({d["track_id"][i] for i in rows}) == list(range(s.n_characters))
        assert all(s.start <= d["frame_index"][i] < s.end for i in rows)
        for t in s.tracks:
            assert {d["character_id"][i] for i in rows if d["track_id"][i] == t.track_id} == {t.character_id}


def test_visible_masks_never_overlap_and_touch_borders(episode: Path) -> None:
    truth = load_truth(episode)
    touching = 0
    n_frames = 0
    for frame, ids, masks in iter_truth_masks(episode):
        n_frames += 1
        assert masks.shape == (len(ids), H, W) and masks.dtype == bool
        assert list(ids) == sorted(ids)
        if len(ids) > 1:
            assert masks.sum(axis=0).max() == 1, frame
        for m in masks:
            touching += bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    assert n_frames == truth.frame_count
    assert touching > 50
    # Characters enter or leave mid-shot: a track starts after its shot or ends before it.
    assert any(
        t.first_frame > max(s.start, s.transition_end) or t.last_frame < s.end - 1
        for s in truth.shots
        for t in s.tracks
    )


def test_iter_truth_masks_reads_a_range(episode: Path) -> None:
    got = [(f, ids.tolist(), m.sum(axis=(1, 2)).tolist()) for f, ids, m in iter_truth_masks(episode, 100, 130, chunk=7)]
    assert [g[0] for g in got] == list(range(100, 130))
    d = pq.read_table(
        episode / "masks.parquet", filters=[("frame_index", ">=", 100), ("frame_index", "<", 130)]
    ).to_pydict()
    expected = {}
    for f, t, a in zip(d["frame_index"], d["track_id"], d["area"]):
        expected.setdefault(f, ([], []))
        expected[f][0].append(t)
        expected[f][1].append(a)
    for f, ids, areas in got:
        assert (ids, areas) == (list(expected.get(f, ([], []))[0]), list(expected.get(f, ([], []))[1]))


def test_masks_cover_exactly_the_character_pixels(episode: Path, plan) -> None:
    """Against a re-render without characters (same set and camera): outside the masks
    the frame is the bare background (but for a 2-px anti-aliased fringe), inside it is not."""
    truth = load_truth(episode)
    skip = _spans(truth) | {f.frame for f in truth.flashes}
    subs = {f for s in truth.shots for a, b in s.subtitle_spans for f in range(a, b)}
    wanted = [
        f for f in range(0, truth.frame_count, 9) if f not in skip and f not in subs and truth.shot_at(f).n_characters
    ]
    assert len(wanted) >= 15
    masks = {f: (ids, m) for f, ids, m in iter_truth_masks(episode) if f in wanted}

    checked = 0
    for fr in render_frames(plan):
        if fr.index not in masks:
            continue
        ids, m = masks[fr.index]
        if not len(ids):
            continue
        plate = background_plate(plan, fr.shot, fr.index)
        differs = (fr.rgb != plate).any(axis=2)
        union = m.any(axis=0)
        near = cv2.dilate(union.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        # A character just outside the frame can tint the outermost pixels through the
        # camera's bilinear resampling without owning them: ignore a 2-px ring.
        near[:2] = near[-2:] = near[:, :2] = near[:, -2:] = True
        assert not (differs & ~near).any(), fr.index
        for k, mk in enumerate(m):
            assert differs[mk].mean() > 0.97, (fr.index, k)
        checked += 1
    assert checked >= 15


# --------------------------------------------------------------------------- pieces and errors


def test_character_is_flat_colour_with_shadow_and_outline() -> None:
    design = random_design(child_rng(3, "cast", 0), character_id=0)
    sprite = draw_character(design, Pose(mouth="open"), 30.0)
    solid = sprite.alpha == 255
    colours = {tuple(c) for c in sprite.rgb[solid].reshape(-1, 3)}
    assert design.top in colours
    assert shade(design.top, design.shadow_strength) in colours
    assert design.line in colours
    # Flat colour: a few dozen distinct colours make up most of the opaque pixels.
    values, counts = np.unique(sprite.rgb[solid].reshape(-1, 3), axis=0, return_counts=True)
    assert np.sort(counts)[::-1][:40].sum() > 0.9 * solid.sum()
    # Pasting labels exactly the mask pixels.
    canvas = np.zeros((600, 400, 3), np.uint8)
    labels = np.zeros((600, 400), np.uint8)
    paste_sprite(canvas, labels, sprite, (200.0, 550.0), label=3)
    assert (labels == 3).sum() == sprite.mask.sum()
    paste_sprite(canvas, labels, sprite, (-10.0, 550.0), label=4)  # clipped by the canvas edge
    assert 0 < (labels == 4).sum() < sprite.mask.sum()


@pytest.mark.parametrize(
    "kwargs",
    [dict(width=641), dict(height=50), dict(duration=0.0), dict(duration=-1.0), dict(fps=Fraction(0, 1))],
)
def test_bad_arguments_raise_value_error(tmp_path: Path, kwargs: dict) -> None:
    args = dict(seed=1, duration=1.0) | kwargs
    with pytest.raises(ValueError):
        generate_episode(tmp_path, **args)
    assert not (tmp_path / "truth.json").exists()


def test_load_truth_without_episode_is_an_operator_error(tmp_path: Path) -> None:
    with pytest.raises(CelmaskError, match="truth.json"):
        load_truth(tmp_path)


def test_short_episode_and_other_size(tmp_path: Path) -> None:
    truth = generate_episode(tmp_path, seed=3, duration=1.0, width=320, height=180, fps=Fraction(24, 1))
    assert truth.frame_count == 24 and len(truth.shots) >= 1
    v = _decode(tmp_path / "episode.mp4", 320, 180)
    assert v.shape == (24, 180, 320, 3)
    assert load_truth(tmp_path) == truth
    # Regenerating into the same folder replaces the episode.
    again = generate_episode(tmp_path, seed=3, duration=1.0, width=320, height=180, fps=Fraction(24, 1))
    assert again == truth and sorted(p.name for p in tmp_path.iterdir()) == [
        "episode.mp4",
        "masks.parquet",
        "truth.json",
    ]


def test_an_episode_asked_for_twice_at_once_is_made_once(tmp_path: Path) -> None:
    """Two processes that ensure the same cached episode take turns (tests side by side
    once clobbered each other's half-written files): the second waits, then reuses."""
    import fcntl
    import sys

    from celmask.tasks.synth.suite import ensure_episode

    out = tmp_path / "cache" / "seed-3"
    code = f"from celmask.tasks.synth.suite import ensure_episode; ensure_episode({str(out)!r}, seed=3, duration=1.0)"
    out.parent.mkdir(parents=True)
    with open(out.parent / ".seed-3.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as if another process were generating it
        child = subprocess.Popen([sys.executable, "-c", code])
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=3)  # waits for the lock instead of writing beside the holder
        assert not out.exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    assert child.wait(timeout=120) == 0
    made = (out / "truth.json").stat().st_mtime_ns
    assert ensure_episode(out, seed=3, duration=1.0) == out
    assert (out / "truth.json").stat().st_mtime_ns == made  # reused, not made again
