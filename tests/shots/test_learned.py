"""The learned second opinion: TransNetV2's window grid, the fusion rules, and the
detector with a stand-in model (no video files); one test loads the real network, and
one watches torch stay unimported when nothing is in doubt."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.models.transnetv2 import MARGIN, STRIDE, WINDOW
from celmask.tasks.shots.detect import ShotConfig, ShotDetector, _Candidate, fuse
from celmask.tasks.shots.learned import CutProbability
from tests.support.scenes import SHOT_SIZE, held
from tests.support.scenes import flat_set as scene

H, W = SHOT_SIZE
TAG = 2
"""Frames carry their index in this channel of their top-left corner, which the stand-in model reads back."""


class Fixed:
    """A stand-in model: the probability of frame ``i`` is ``values.get(i, 0)``; counts windows read."""

    id = "fixed"
    device = "cpu"

    def __init__(self, values: dict[int, float] | None = None) -> None:
        self.values = values or {}
        self.windows: list[int] = []

    def predict(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for w in windows:
            first = int(w[MARGIN, 0, 0, TAG])  # the first frame a window gives probabilities for
            self.windows.append(first // STRIDE)
            out.append([self.values.get(first + i, 0.0) for i in range(STRIDE)])
        return np.asarray(out, np.float32)


def tagged(frames: list[np.ndarray]) -> list[np.ndarray]:
    """``frames`` with their index (mod 256) in the :data:`TAG` channel of a corner block that
    survives the resize to 48x27 (and, a grey level or two, leaves held frames held)."""
    out = []
    for i, frame in enumerate(frames):
        f = frame.copy()
        f[:12, :12, TAG] = i % 256
        out.append(f)
    return out


def blank(n: int) -> list[np.ndarray]:
    return tagged([np.zeros((27, 48, 3), np.uint8)] * n)


def test_requested_windows_give_the_every_frame_values_and_nan_elsewhere():
    values = {i: i / 1000 for i in range(230)}
    everything = CutProbability(Fixed(values).predict, every_frame=True)
    model = Fixed(values)
    some = CutProbability(model.predict, every_frame=False)
    for f in blank(230):
        everything.push(f)
        some.push(f)
    some.request(120, 121)
    full, part = everything.finish(), some.finish()
    assert np.allclose(full[:230], [values[i] for i in range(230)], atol=1e-6)
    assert sorted(set(model.windows)) == [2]  # frames 100..149 only
    assert np.array_equal(part[100:150], full[100:150]) and np.isnan(part[:100]).all() and np.isnan(part[150:]).all()


def test_windows_repeat_the_first_and_last_frame_past_the_ends():
    seen = []

    def predict(windows: np.ndarray) -> np.ndarray:
        seen.extend(w[:, 0, 0, TAG].copy() for w in windows)
        return np.zeros((len(windows), STRIDE), np.float32)

    cp = CutProbability(predict, every_frame=True)
    for f in blank(60):
        cp.push(f)
    assert len(cp.finish()) == 60
    assert len(seen) == 2 and all(len(w) == WINDOW for w in seen)
    assert seen[0][: MARGIN + 1].tolist() == [0] * (MARGIN + 1) and seen[0][-1] == 59  # frames -25..74 of 0..59
    assert seen[1][0] == STRIDE - MARGIN and seen[1][-1] == 59


def test_a_window_asked_for_too_late_is_an_error():
    cp = CutProbability(lambda w: np.zeros((len(w), STRIDE), np.float32), every_frame=False)
    for f in blank(700):
        cp.push(f)
    with pytest.raises(RuntimeError, match="left the ring"):
        cp.request(10, 11)


def candidate(frame: int, tier: str = "cut", doubt: str = "", step: float = 0.4) -> _Candidate:
    return _Candidate(frame, step, 10.0, tier, doubt)


def probability(n: int, **at: float) -> np.ndarray:
    p = np.zeros(n, np.float32)
    for key, value in at.items():
        p[int(key[1:]) - 1] = value  # TransNetV2 marks the frame before the cut
    return p


def test_fusion_vetoes_a_cover_unless_the_model_is_sure_both_ways():
    cfg = ShotConfig()
    cover = [candidate(100, doubt="cover"), candidate(104, doubt="cover"), candidate(120, doubt="cover")]
    covers = [(100, 118)]
    assert fuse(cover, covers, [], probability(200, f100=0.9, f120=0.3), cfg)[0] == []
    kept = fuse(cover, covers, [], probability(200, f100=0.9, f120=0.8), cfg)[0]
    assert [t for t, _ in kept] == [100, 104, 120]  # min_shot_frames merges the close ones later
    # the rules alone keep every cut, as before the model
    assert len(fuse(cover, covers, [], None, cfg)[0]) == 3


def test_fusion_on_doubts_weak_changes_flashes_and_fades():
    cfg = ShotConfig()
    cands = [
        candidate(50, doubt="persist"),
        candidate(80, doubt="persist"),
        candidate(110, "weak", step=0.1),
        candidate(140, "weak", step=0.1),
        candidate(170, "flash"),
        candidate(172, "weak", step=0.1),
        candidate(205, "weak", step=0.1),
        candidate(240),
    ]
    p = probability(300, f50=0.1, f80=0.7, f110=0.4, f140=0.6, f170=1.0, f172=0.9, f205=0.9, f240=0.0)
    cuts, blends = fuse(cands, [], [(200, 212, "fade")], p, cfg)
    # persist: the model decides; weak: added when confident, not next to a flash or inside a fade;
    # a sure cut of the rules stands whatever the model says; a flash never cuts
    assert [t for t, _ in cuts] == [80, 140, 240] and blends == [(200, 212, "fade")]
    # unread (NaN): the rules' cuts stand, nothing is added
    assert [t for t, _ in fuse(cands, [], [], np.full(300, np.nan, np.float32), cfg)[0]] == [50, 80, 240]


def test_a_dissolve_needs_the_model_a_fade_does_not():
    cfg = ShotConfig()
    gradual = [(100, 120, "dissolve"), (200, 230, "fade"), (300, 320, "dissolve")]
    kept = fuse([], [], gradual, probability(400, f110=0.8), cfg)[1]
    assert kept == [(100, 120, "dissolve"), (200, 230, "fade")]  # the second dissolve was a wipe to the model
    assert fuse([], [], gradual, None, cfg)[1] == gradual


def test_blends_inside_a_vetoed_cover_go_with_it():
    cfg = ShotConfig()
    cuts, blends = fuse(
        [candidate(100, doubt="cover"), candidate(130, doubt="cover")],
        [(100, 128)],
        [(105, 125, "dissolve"), (300, 320, "fade")],
        probability(400),
        cfg,
    )
    assert cuts == [] and blends == [(300, 320, "fade")]


def run(frames: list[np.ndarray], model: Fixed, **config) -> list[tuple[int, str]]:
    detector = ShotDetector(ShotConfig(**config), model)
    for i, frame in enumerate(tagged(frames)):
        detector.push(i / 24, frame)
    return [(s.start, s.transition) for s in detector.finish().shots]


def wipe(a: np.ndarray, enter: int, full: int) -> list[np.ndarray]:
    """A flat band with an outline sliding across ``a``, covering it whole for ``full`` frames, and off again."""
    out = []
    band = np.full_like(a, (90, 60, 120))
    for step in range(enter):
        f = a.copy()
        x = (step + 1) * W // (enter + 1)
        f[:, :x] = band[:, :x]
        f[:, max(0, x - 2) : x] = 20
        out.append(f)
    out += [band.copy() for _ in range(full)]
    for step in range(enter):
        f = band.copy()
        x = (step + 1) * W // (enter + 1)
        f[:, :x] = a[:, :x]
        f[:, x : x + 2] = 20
        out.append(f)
    return out


def test_an_occlusion_uncovering_the_same_shot_is_no_cut_when_the_model_disagrees():
    a, b = scene(1), scene(2)
    frames = held(a, 30) + wipe(a, 3, 12) + held(a, 30) + held(b, 30)
    model = Fixed()
    assert run(frames, model, learned="never")[1:-1] != []  # the rules alone cut around the wipe
    assert run(frames, model) == [(0, "start"), (len(frames) - 30, "cut")]
    assert model.windows and len(set(model.windows)) < (len(frames) + STRIDE - 1) // STRIDE  # only around the wipe


def test_a_short_insert_stays_two_cuts_when_the_model_is_sure():
    a, b = scene(1), scene(3)
    frames = held(a, 30) + held(b, 20) + held(a, 30)
    model = Fixed({29: 0.95, 49: 0.95})
    assert run(frames, model) == [(0, "start"), (30, "cut"), (50, "cut")]


@pytest.mark.parametrize("length", [1, 3])
def test_flashes_keep_the_final_word_over_a_sure_model(length):
    a = scene(1)
    frames = held(a, 20) + held(np.full_like(a, 255), length) + held(a, 20)
    model = Fixed(dict.fromkeys(range(len(frames)), 1.0))
    assert run(frames, model, learned="always") == [(0, "start")]


def test_the_model_adds_a_cut_the_rules_miss_only_when_confident():
    base = scene(4)
    jumped = base.copy()
    jumped[30:70, 50:90] = base[30:70, 100:140]  # the same set, something in it jumped: too little for the rules
    frames = held(base, 30) + held(jumped, 30)
    assert run(frames, Fixed(), learned="never") == [(0, "start")]
    for mode in ("auto", "always"):
        assert run(frames, Fixed({29: 0.3}), learned=mode) == [(0, "start")]
        assert run(frames, Fixed({29: 0.9}), learned=mode) == [(0, "start"), (30, "cut")]


def test_learned_mode_is_checked():
    with pytest.raises(ValueError, match="learned must be one of auto, always, never"):
        ShotConfig(learned="sometimes")
    with pytest.raises(ValueError, match="return_window"):
        ShotConfig(return_window=3)
    assert (H, W) == (90, 160)


@pytest.mark.parametrize(
    "picture, in_doubt",
    [
        (
            "[0:v]trim=duration=2[a];[1:v]trim=duration=2,setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]",
            False,
        ),  # a clean cut: the rules alone are sure
        ("[1:v]crop=160:180:160:0[r];[0:v][r]overlay=160:0:enable='gte(t,2)'[v]", True),  # half stays: in doubt
    ],
    ids=["clean-cut", "half-the-picture-stays"],
)
def test_torch_is_not_even_imported_when_nothing_is_in_doubt(tmp_path, picture, in_doubt):
    """The README's promise for ``shots.learned=auto`` on a CPU, seen in a fresh interpreter."""
    import json
    import subprocess
    import sys

    video = tmp_path / "two.mp4"
    sources = ["testsrc=size=320x180:rate=24:duration=4", "smptebars=size=320x180:rate=24:duration=4"]
    inputs = [a for s in sources for a in ("-f", "lavfi", "-i", s)]
    subprocess.run(
        ["ffmpeg", "-v", "error", *inputs, "-filter_complex", picture, "-map", "[v]", "-t", "4", "-pix_fmt", "yuv420p", str(video)],
        check=True,
    )  # fmt: skip
    code = (
        "import json, sys; from celmask.tasks.shots.detect import detect_shots; r = detect_shots(sys.argv[1]); "
        "print(json.dumps({'cuts': [s.start for s in r.shots][1:], 'windows': r.learned['windows'], 'torch': 'torch' in sys.modules}))"
    )
    seen = json.loads(
        subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True, check=True).stdout
    )
    assert seen["cuts"] == [48]
    assert seen["torch"] is in_doubt and (seen["windows"] > 0) is in_doubt
