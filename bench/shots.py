"""Shot detection: celmask against PySceneDetect on the same files, in one process.

For every generated episode of the suite (held-out seeds, with ground truth) and,
where ../shared/realclips exists, every real clip (speed only: no labels), run

- celmask's detector (``celmask.tasks.shots.detect.detect_shots``, defaults),
- PySceneDetect ``ContentDetector()`` and ``AdaptiveDetector()`` at their defaults,

and print precision / recall / F1 of boundaries (hard cut within ±1 frame, gradual
transition anywhere inside its span), false cuts on flash frames and holds,
frames per second, and the speed ratio against each reference; then celmask's
held-frame flags against the truth and the share of frames models must run on.

    .venv/bin/python bench/shots.py                 # 6 episodes x 60 s
    .venv/bin/python bench/shots.py --episodes 2 --duration 30 --no-real
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celmask.tasks.eval.shots import CutScore, HoldScore, boundaries, score_boundaries, score_holds  # noqa: E402
from celmask.tasks.shots.detect import detect_shots  # noqa: E402
from celmask.tasks.synth import load_truth  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402

SHARED = ROOT.parent / "shared"
FLASH_RADIUS = 2
"""A false boundary this close to a flash frame counts as a false cut on a flash."""


def celmask_boundaries(video: Path) -> list[int]:
    return [s.start for s in detect_shots(video).shots[1:]]


def scenedetect_boundaries(detector_factory: Callable) -> Callable[[Path], list[int]]:
    def run(video: Path) -> list[int]:
        from scenedetect import detect

        scenes = detect(str(video), detector_factory())
        return [start.frame_num for start, _ in scenes[1:]]

    return run


def references() -> dict[str, Callable[[Path], list[int]]]:
    from scenedetect import AdaptiveDetector, ContentDetector

    return {
        "celmask": celmask_boundaries,
        "pyscenedetect-content": scenedetect_boundaries(ContentDetector),
        "pyscenedetect-adaptive": scenedetect_boundaries(AdaptiveDetector),
    }


def timed(method: Callable[[Path], list[int]], video: Path, repeat: int) -> tuple[list[int], float]:
    """Boundaries and the best wall time of ``repeat`` runs (a shared 2-core VM is noisy)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        found = method(video)
        best = min(best, time.perf_counter() - t0)
    return found, best


def print_held_frames(episodes: list[Path]) -> None:
    """Held-frame flags against the truth's identical renders, and the model calls they save."""
    total = HoldScore(0, 0, 0, 0, 0)
    for directory in episodes:
        total += score_holds(detect_shots(directory / "episode.mp4").held, load_truth(directory).holds)
    print(
        f"\nHeld frames: precision {total.precision:.4f}, recall {total.recall:.4f}; {total.drawings} unique "
        f"drawings in {total.frames} frames: models run on {total.drawings / total.frames:.1%} of frames"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--first-seed", type=int, default=1000, help="held-out seeds: tests and training use others")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-episodes")
    parser.add_argument("--no-real", action="store_true", help="skip ../shared/realclips")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and file; the fastest counts (default 3)")
    args = parser.parse_args()

    methods = references()
    episodes = [
        ensure_episode(args.cache / f"seed-{seed}", seed=seed, duration=args.duration)
        for seed in range(args.first_seed, args.first_seed + args.episodes)
    ]
    scores = {name: CutScore(0, 0, 0) for name in methods}
    flash_fp = dict.fromkeys(methods, 0)
    hold_fp = dict.fromkeys(methods, 0)
    seconds = dict.fromkeys(methods, 0.0)
    frames = 0
    for directory in episodes:
        truth = load_truth(directory)
        frames += truth.frame_count
        true = boundaries(truth.shots)
        flashes = [f.frame for f in truth.flashes]
        hold_frames = {t for a, b in truth.holds for t in range(a + 1, b)}
        line = []
        for name, method in methods.items():
            found, dt = timed(method, directory / "episode.mp4", args.repeat)
            seconds[name] += dt
            score = score_boundaries(found, true)
            scores[name] += score
            flash_fp[name] += sum(any(abs(d - f) <= FLASH_RADIUS for f in flashes) for d in score.false_frames)
            hold_fp[name] += sum(d in hold_frames for d in score.false_frames)
            line.append(f"{name} F1 {score.f1:.3f}")
        print(f"  {directory.name}: " + ", ".join(line), flush=True)

    print(f"\nGenerated suite: {len(episodes)} episodes, {frames} frames, {sum(len(load_truth(d).shots) - 1 for d in episodes)} true boundaries")
    print(f"{'method':<24} {'precision':>9} {'recall':>7} {'F1':>6} {'flash FP':>8} {'hold FP':>7} {'fps':>7}")
    for name in methods:
        s = scores[name]
        print(f"{name:<24} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {flash_fp[name]:>8} {hold_fp[name]:>7} {frames / seconds[name]:>7.0f}")
    for name in methods:
        if name != "celmask":
            print(f"speed ratio celmask / {name}: {seconds[name] / seconds['celmask']:.2f}x")

    print_held_frames(episodes)

    clips = sorted((SHARED / "realclips").glob("*.*")) if not args.no_real else []
    clips = [c for c in clips if c.suffix in (".mp4", ".mkv", ".gif")]
    if clips:
        print(f"\nReal clips (no labels; boundaries found and fps): {SHARED / 'realclips'}")
        print(f"{'clip':<40} " + " ".join(f"{n:>28}" for n in methods))
        totals = dict.fromkeys(methods, 0.0)
        for clip in clips:
            cells = []
            for name, method in methods.items():
                found, dt = timed(method, clip, args.repeat)
                totals[name] += dt
                cells.append(f"{len(found):>5} cuts {dt:>7.2f} s")
            print(f"{clip.name:<40} " + " ".join(f"{c:>28}" for c in cells), flush=True)
        for name in methods:
            if name != "celmask":
                print(f"speed ratio on real clips celmask / {name}: {totals[name] / totals['celmask']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
