"""Shot detection and held frames against the ground truth of generated episodes.

The suite (12 episodes x 30 s, seeds 2000-2011) was used neither to tune the
detector (seeds 1-6) nor by the benchmark (seeds 1000+). Episodes are cached in
.cache/test-episodes so a second run skips generation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from celmask.tasks.eval.shots import CutScore, HoldScore, boundaries, score_boundaries, score_holds
from celmask.tasks.shots.detect import ShotResult, detect_shots
from celmask.tasks.synth import Truth, load_truth
from celmask.tasks.synth.suite import ensure_episode

pytestmark = pytest.mark.slow

SEEDS = range(2000, 2012)
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-episodes"


@pytest.fixture(scope="module")
def suite() -> list[tuple[Truth, ShotResult]]:
    out = []
    for seed in SEEDS:
        directory = ensure_episode(CACHE / f"seed-{seed}-30s", seed=seed, duration=30.0)
        out.append((load_truth(directory), detect_shots(directory / "episode.mp4")))
    return out


def test_cut_f1_on_generated_suite(suite):
    total = CutScore(0, 0, 0)
    kinds = set()
    for truth, result in suite:
        true = boundaries(truth.shots)
        kinds |= {s.transition for s in truth.shots[1:]}
        total += score_boundaries([s.start for s in result.shots[1:]], true)
        assert [s.start for s in result.shots] == sorted({s.start for s in result.shots})
        assert result.shots[-1].end == truth.frame_count
    assert kinds == {"cut", "fade", "dissolve"}
    assert total.true_positives + total.false_negatives >= 80  # enough boundaries to mean something
    assert total.f1 >= 0.97, f"F1 {total.f1:.3f}: false {total.false_frames}, missed {total.missed_frames}"


def test_no_false_cuts_on_flashes_or_holds(suite):
    flashes = holds = 0
    for truth, result in suite:
        true = boundaries(truth.shots)
        false = score_boundaries([s.start for s in result.shots[1:]], true).false_frames
        for flash in truth.flashes:
            flashes += 1
            assert not [f for f in false if abs(f - flash.frame) <= 3], f"false cut at flash {flash.frame}"
        for a, b in truth.holds:
            holds += 1
            assert not [f for f in false if a < f < b], f"false cut inside hold [{a}, {b})"
    assert flashes >= 10 and holds >= 100  # the suite really has them


def test_held_frames_match_the_identical_renders(suite):
    total = HoldScore(0, 0, 0, 0, 0)
    for truth, result in suite:
        total += score_holds(result.held, truth.holds)
    # A few "held" frames are real changes too small to see at 160 px (a 1 px pan).
    assert total.precision >= 0.95 and total.recall >= 0.99, (total.precision, total.recall)
    assert total.drawings / total.frames < 0.55  # most frames reuse a drawing: the model calls saved
