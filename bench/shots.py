"""Shot detection, six ways on the same files in one process: celmask's rules alone,
celmask fused with TransNetV2 (the default, ``shots.learned=auto``), TransNetV2 alone,
and PySceneDetect's ``ContentDetector()`` and ``AdaptiveDetector()`` at their defaults
and ``AdaptiveDetector`` with the best settings of PySceneDetect's own benchmark sweep
(``adaptive_threshold=3.5, window_width=3, min_scene_len=0.6 s``). Each decodes the
way it does for a user (:data:`DECODES`, printed with the table), and every run starts
with a cold probe cache, as a user's first command on a file does.

On the generated suite (held-out seeds, hard cases on: occlusions, background
switches, cut-ins and cut-outs, jump cuts, returns after short inserts; see
celmask.tasks.synth.edits) it prints precision / recall / F1 of boundaries (hard cut
within ±1 frame, gradual transition anywhere inside its span), false cuts on flash
frames and holds, frames per second, and each hard case: how many occlusions and
background switches got no boundary, how many cut-ins, cut-outs, jumps and returns
were found. On ../shared/realclips (no labels) it prints each method's boundary
count and time, and every frame where the fused answer disagrees with the rules or
with TransNetV2, with the probability there; ``--sheets DIR`` writes a picture of the
frames around each disagreement to look at.

    .venv/bin/python bench/shots.py                       # 6 episodes x 60 s + real clips
    .venv/bin/python bench/shots.py --episodes 2 --duration 30 --no-real
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celmask.models.transnetv2 import default_device, shared_model  # noqa: E402
from celmask.tasks.eval.shots import CutScore, HoldScore, boundaries, score_boundaries, score_holds  # noqa: E402
from celmask.tasks.shots.detect import ShotConfig, ShotResult, detect_shots  # noqa: E402
from celmask.tasks.shots.learned import CutProbability  # noqa: E402
from celmask.tasks.synth import Truth, load_truth  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402
from celmask.tasks.video import iter_frames, probe  # noqa: E402
from celmask.tasks.video.probing import forget_probes  # noqa: E402

SHARED = ROOT.parent / "shared"
FLASH_RADIUS = 2
"""A false boundary this close to a flash frame counts as a false cut on a flash."""
CASE_RADIUS = 2
"""A boundary this close to an occlusion's span or a background switch counts against it."""
TRANSNET_THRESHOLD = 0.5
"""TransNetV2's own threshold (its ``predictions_to_scenes``)."""
PYSCENEDETECT_BEST = {"adaptive_threshold": 3.5, "window_width": 3, "min_scene_len": 0.6}
"""AdaptiveDetector's best F1 in PySceneDetect's benchmark sweep (min_scene_len in seconds)."""
DECODES = {
    "celmask rules": "one ffmpeg pipe, scaled to 160 px wide inside ffmpeg",
    "celmask fused": "the same pipe; TransNetV2 reads it resized to 48x27",
    "transnetv2": "celmask's pipe (as fused), every frame through the model",
    "pyscenedetect-content": "OpenCV VideoCapture at full size, downscaled by PySceneDetect (auto, ~256 px)",
    "pyscenedetect-adaptive": "as pyscenedetect-content",
    "pyscenedetect-adaptive-best": "as pyscenedetect-content",
}
"""How each method gets its frames."""


class Methods:
    """The five detectors; the fused one keeps its last result (its probabilities) for the disagreement report."""

    def __init__(self) -> None:
        self.last_fused: ShotResult | None = None
        self.last_transnet: np.ndarray | None = None

    def table(self) -> dict[str, Callable[[Path], list[int]]]:
        from scenedetect import AdaptiveDetector, ContentDetector

        return {
            "celmask rules": lambda v: [s.start for s in detect_shots(v, ShotConfig(learned="never")).shots[1:]],
            "celmask fused": self.fused,
            "transnetv2": self.transnet,
            "pyscenedetect-content": scenedetect_boundaries(ContentDetector),
            "pyscenedetect-adaptive": scenedetect_boundaries(AdaptiveDetector),
            "pyscenedetect-adaptive-best": scenedetect_boundaries(lambda: AdaptiveDetector(**PYSCENEDETECT_BEST)),
        }

    def fused(self, video: Path) -> list[int]:
        self.last_fused = detect_shots(video)
        return [s.start for s in self.last_fused.shots[1:]]

    def transnet(self, video: Path) -> list[int]:
        """TransNetV2 alone on celmask's own decode, thresholded as TransNetV2 does: a
        scene ends at a run of frames above the threshold, the next starts after it."""
        model = shared_model(default_device())
        probability = CutProbability(model.predict, every_frame=True, batch=1 if model.device == "cpu" else 16)
        for frame in iter_frames(video, width=max(48, min(160, probe(video).width)), deblock=False):
            probability.push(frame.image)
        self.last_transnet = probability.finish()
        above = self.last_transnet > TRANSNET_THRESHOLD
        return [i for i in range(1, len(above)) if above[i - 1] and not above[i]]


def scenedetect_boundaries(detector_factory: Callable) -> Callable[[Path], list[int]]:
    def run(video: Path) -> list[int]:
        from scenedetect import detect

        scenes = detect(str(video), detector_factory())
        return [start.frame_num for start, _ in scenes[1:]]

    return run


def timed(method: Callable[[Path], list[int]], video: Path, repeat: int) -> tuple[list[int], float]:
    """Boundaries and the best wall time of ``repeat`` runs (a shared 2-core VM is noisy),
    each from a cold probe cache."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        forget_probes()
        t0 = time.perf_counter()
        found = method(video)
        best = min(best, time.perf_counter() - t0)
    return found, best


def hard_cases(truth: Truth, found: list[int]) -> dict[str, tuple[int, int]]:
    """Per hard case: (right, of how many)."""
    out = {}
    spans = {"occlusions": list(truth.occlusions), "switches": [(f, f + 1) for f in truth.switches]}
    for name, cases in spans.items():
        right = sum(not any(a - CASE_RADIUS <= d < b + CASE_RADIUS for d in found) for a, b in cases)
        out[f"{name} (no cut)"] = (right, len(cases))
    for edit in ("cut-in", "cut-out", "jump", "return"):
        starts = [s.start for s in truth.shots if s.edit == edit]
        out[f"{edit}s found"] = (sum(any(abs(d - b) <= 1 for d in found) for b in starts), len(starts))
    return out


def print_held_frames(episodes: list[Path]) -> None:
    """Held-frame flags against the truth's identical renders, and the model calls they save."""
    total = HoldScore(0, 0, 0, 0, 0)
    for directory in episodes:
        total += score_holds(
            detect_shots(directory / "episode.mp4", ShotConfig(learned="never")).held, load_truth(directory).holds
        )
    print(
        f"\nHeld frames: precision {total.precision:.4f}, recall {total.recall:.4f}; {total.drawings} unique "
        f"drawings in {total.frames} frames: models run on {total.drawings / total.frames:.1%} of frames"
    )


def generated_suite(methods: dict[str, Callable[[Path], list[int]]], episodes: list[Path], repeat: int) -> None:
    scores = {name: CutScore(0, 0, 0) for name in methods}
    flash_fp = dict.fromkeys(methods, 0)
    hold_fp = dict.fromkeys(methods, 0)
    seconds = dict.fromkeys(methods, 0.0)
    cases: dict[str, dict[str, list[int]]] = {name: {} for name in methods}
    frames = 0
    for directory in episodes:
        truth = load_truth(directory)
        frames += truth.frame_count
        true = boundaries(truth.shots)
        flashes = [f.frame for f in truth.flashes]
        hold_frames = {t for a, b in truth.holds for t in range(a + 1, b)}
        line = []
        for name, method in methods.items():
            found, dt = timed(method, directory / "episode.mp4", repeat)
            seconds[name] += dt
            score = score_boundaries(found, true)
            scores[name] += score
            flash_fp[name] += sum(any(abs(d - f) <= FLASH_RADIUS for f in flashes) for d in score.false_frames)
            hold_fp[name] += sum(d in hold_frames for d in score.false_frames)
            for case, (right, total) in hard_cases(truth, found).items():
                tally = cases[name].setdefault(case, [0, 0])
                tally[0] += right
                tally[1] += total
            line.append(f"{name} F1 {score.f1:.3f}")
        print(f"  {directory.name}: " + ", ".join(line), flush=True)

    print(
        f"\nGenerated suite (hard cases): {len(episodes)} episodes, {frames} frames, "
        f"{sum(len(load_truth(d).shots) - 1 for d in episodes)} true boundaries"
    )
    print(f"{'method':<28} {'precision':>9} {'recall':>7} {'F1':>6} {'flash FP':>8} {'hold FP':>7} {'fps':>7}")
    for name in methods:
        s = scores[name]
        print(
            f"{name:<28} {s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f} {flash_fp[name]:>8} {hold_fp[name]:>7} {frames / seconds[name]:>7.0f}"
        )
    names = list(cases[next(iter(methods))])
    print(f"\n{'hard case (right / all)':<28} " + " ".join(f"{n:>16}" for n in names))
    for name in methods:
        print(f"{name:<28} " + " ".join(f"{f'{r} / {t}':>16}" for r, t in (cases[name][n] for n in names)))
    print_held_frames(episodes)


def sheet(video: Path, frame: int, out: Path, title: str) -> None:
    """Frames ``frame-2 .. frame+1`` side by side (the boundary falls before ``frame``)."""
    want = range(frame - 2, frame + 2)
    pictures = [f.image for f in iter_frames(video, width=240, start=max(0, want[0]), end=want[-1] + 1)]
    row = np.concatenate(pictures, axis=1)
    cv2.putText(row, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def real_clips(
    runner: Methods,
    methods: dict[str, Callable[[Path], list[int]]],
    clips: list[Path],
    repeat: int,
    sheets: Path | None,
) -> None:
    print(f"\nReal clips (no labels: boundaries found, seconds): {SHARED / 'realclips'}")
    print(f"{'clip':<40} " + " ".join(f"{n:>24}" for n in methods))
    totals = dict.fromkeys(methods, 0.0)
    disagreements = []
    for clip in clips:
        cells, found = [], {}
        for name, method in methods.items():
            found[name], dt = timed(method, clip, repeat if name != "transnetv2" else 1)
            totals[name] += dt
            cells.append(f"{len(found[name]):>5} cuts {dt:>8.2f} s")
        print(f"{clip.name:<40} " + " ".join(f"{c:>24}" for c in cells), flush=True)
        fused, probability = set(found["celmask fused"]), runner.last_transnet
        for other in ("celmask rules", "transnetv2"):
            for t in sorted(fused.symmetric_difference(found[other])):
                if any(abs(t - u) <= 1 for u in fused) and any(abs(t - u) <= 1 for u in found[other]):
                    continue  # the same boundary a frame apart
                p = float(np.max(probability[max(0, t - 1) : t + 1])) if probability is not None else float("nan")
                disagreements.append((clip, t, other, "fused" if t in fused else other, p))
    print(f"{'total seconds':<40} " + " ".join(f"{totals[n]:>22.1f} s" for n in methods))
    print(f"\nDisagreements on real clips (fused vs rules / TransNetV2), {len(disagreements)}:")
    print(f"{'clip':<40} {'frame':>6} {'vs':<14} {'only in':<14} {'p':>5}")
    for clip, t, other, only, p in disagreements:
        print(f"{clip.name:<40} {t:>6} {other:<14} {only:<14} {p:>5.2f}")
        if sheets is not None:
            sheet(
                clip,
                t,
                sheets / f"{clip.stem}_{t:05d}_{other.replace(' ', '-')}.png",
                f"{clip.stem} {t}: only {only} (vs {other}), p {p:.2f}",
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--first-seed", type=int, default=1000, help="held-out seeds: tuning, tests and training use others"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-episodes")
    parser.add_argument("--no-real", action="store_true", help="skip ../shared/realclips")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per method and file; the fastest counts (default 1)"
    )
    parser.add_argument(
        "--sheets", type=Path, help="write a picture of the frames around each real-clip disagreement here"
    )
    args = parser.parse_args()

    runner = Methods()
    methods = runner.table()
    print("How each method decodes:")
    for name in methods:
        print(f"  {name:<28} {DECODES[name]}")
    episodes = [
        ensure_episode(args.cache / f"seed-{seed}-hard", seed=seed, duration=args.duration, hard_cases=True)
        for seed in range(args.first_seed, args.first_seed + args.episodes)
    ]
    if episodes:
        generated_suite(methods, episodes, args.repeat)
    clips = sorted((SHARED / "realclips").glob("*.*")) if not args.no_real else []
    clips = [c for c in clips if c.suffix in (".mp4", ".mkv", ".gif")]
    if clips:
        real_clips(runner, methods, clips, args.repeat, args.sheets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
