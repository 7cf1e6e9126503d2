"""Per-shot segmentation: what each temporal stage buys, on generated and real-art episodes.

For every generated episode of the suite (seeds no test or training image came
from), and every real-art episode (real cut-outs on real backgrounds,
tasks/synth/realepisode.py; by default only the characters and sets the detector
trained with --split-seed held out as its test split), two per-frame detectors feed
the same pipeline:

- ``builtin``: celmask's detector (models/trained/detector.pt);
- ``unstable``: the truth, deliberately damaged per drawing (misses, eroded /
  dilated / chopped masks, false positives, confidence that follows quality only
  loosely; tasks/synth/unstable.py), read through ``detector=file``; each drawing's
  errors independent of its neighbours' (the best case for propagation and voting);
- ``correlated``: the same damage, but each error lasts ``--persistence`` drawings
  (a miss or a bad mask over a stretch, a false find that stays), as a real
  detector's do;

and each runs five configurations on the TRUE shots: detection on every frame (the
per-frame baseline), detection once per unique drawing (held frames copy it), +
propagation, + propagation + refinement, and the last with the keyframe chosen by
confidence alone; then the full pipeline once more on the shots CELMASK DETECTS, scored
against the true shots (what a user gets: a missed cut carries masks across it, a
false one splits a track). Printed per row: mean J, F and J&F against the truth after
matching tracks, flicker on held drawings (0 is perfect), false-positive tracks
(predicted tracks matched to no true track) in all and per true shot, frames per
second overall and per stage; then the model calls held frames saved.

    .venv/bin/python bench/segment.py                         # 3 generated + 2 real-art episodes x 30 s
    .venv/bin/python bench/segment.py --episodes 1 --duration 10 --detectors unstable --art none
    .venv/bin/python bench/segment.py --episodes 0 --art-episodes 2 --detectors builtin   # real art only
    .venv/bin/python bench/segment.py --configs 3,4 --set flow.work_width=480   # propagation rows, a setting changed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celmask.tasks.core.config import load_config  # noqa: E402
from celmask.tasks.core.errors import CelmaskError  # noqa: E402
from celmask.tasks.eval.masks import SegScore  # noqa: E402
from celmask.tasks.eval.segment import EpisodeEval, evaluate_detected_shots, evaluate_episode  # noqa: E402
from celmask.tasks.segment.config import SegmentConfig  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402
from celmask.tasks.synth.unstable import UnstableConfig, read_unstable_summary, write_unstable_detections  # noqa: E402

CONFIGS = {
    "detector on every frame": ["propagator=none", "refiner=none", "hold_reuse=false"],
    "detector only": ["propagator=none", "refiner=none"],
    "+ propagation": ["propagator=flow", "refiner=none"],
    "+ propagation + refinement": ["propagator=flow", "refiner=pieces"],
    "  same, keyframe by confidence": ["propagator=flow", "refiner=pieces", "keyframe=confidence"],
}
STAGES = ("decode", "detect", "track", "keyframes", "propagate", "refine")
FULL = "+ propagation + refinement"
"""The configuration also run on the detected shots."""
DETECTORS = ("builtin", "unstable", "correlated")
SHARED_ART = ROOT.parent / "shared" / "realart"


def unstable_config(name: str, args: argparse.Namespace) -> UnstableConfig:
    return UnstableConfig(level=args.level, persistence=args.persistence if name == "correlated" else 1)


def unstable_path(episode: Path, config: UnstableConfig) -> Path:
    persistence = f"-p{config.persistence}" if config.persistence > 1 else ""
    return episode / f"unstable-{config.level:g}{persistence}.parquet"


def detector_settings(name: str, episode: Path, args: argparse.Namespace) -> list[str]:
    if name == "builtin":
        return ["detector=yolo"]
    config = unstable_config(name, args)
    path = unstable_path(episode, config)
    if not path.is_file() or path.stat().st_mtime < (episode / "truth.json").stat().st_mtime:  # episode regenerated
        write_unstable_detections(episode, path, seed=1, config=config)
    return ["detector=file", f"detector.path={path}"]


def print_row(name: str, result: EpisodeEval) -> None:
    s = result.score
    total = sum(result.seconds.values())
    stages = " ".join(
        f"{result.frames / result.seconds[k]:>7.0f}" if result.seconds.get(k) else f"{'-':>7}" for k in STAGES
    )
    print(
        f"{name:<32} {s.j:>6.3f} {s.f:>6.3f} {s.jf:>6.3f} {s.flicker:>8.4f} {s.fp_tracks:>4} {result.fp_tracks_per_shot:>7.2f} "
        f"{result.frames / total:>6.1f}  {stages}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--first-seed", type=int, default=3000, help="held-out seeds: tests, training and bench/shots use others"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-segment")
    parser.add_argument(
        "--detectors", default=",".join(DETECTORS), help=f"comma list of {', '.join(DETECTORS)} (default all)"
    )
    parser.add_argument(
        "--configs",
        default="",
        help="comma list of the configurations' row numbers to run, 1-5, and 6: the full pipeline on detected shots "
        "(default all)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a setting added to every configuration"
    )
    parser.add_argument("--level", type=float, default=1.0, help="strength of the unstable detections (default 1)")
    parser.add_argument(
        "--persistence", type=int, default=6, help="drawings each error of the correlated detections lasts (default 6)"
    )
    parser.add_argument(
        "--art",
        default=str(SHARED_ART),
        help="real art (cutouts/, backgrounds/) for the real-art "
        "episodes, or none (default ../shared/realart, skipped when absent)",
    )
    parser.add_argument("--art-episodes", type=int, default=2, help="real-art episodes (default 2)")
    parser.add_argument(
        "--art-split", default="test", help="the split of the art they use: train, val, test (default) or all"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0, help="the detector's training seed that split is of (default 0)"
    )
    args = parser.parse_args()

    seeds = range(args.first_seed, args.first_seed + args.episodes)
    if args.episodes > 0:
        episodes = [ensure_episode(args.cache / f"seed-{seed}", seed=seed, duration=args.duration) for seed in seeds]
        print(f"{len(episodes)} generated episodes x {args.duration:g} s (seeds {seeds[0]}..{seeds[-1]})")
        run_tables(episodes, args)
    art = None if args.art.lower() == "none" else Path(args.art)
    if art is not None and not art.is_dir():
        print(f"\nno real-art episodes: {art} not present")
    elif art is not None and args.art_episodes > 0:
        split = None if args.art_split == "all" else args.art_split
        seeds = range(args.first_seed, args.first_seed + args.art_episodes)
        try:
            episodes = [
                ensure_episode(
                    args.cache / f"art-{args.art_split}-{args.split_seed}-seed-{seed}",
                    seed=seed,
                    duration=args.duration,
                    art=art,
                    art_split=split,
                    split_seed=args.split_seed,
                )
                for seed in seeds
            ]
        except CelmaskError as error:
            print(f"bench/segment.py: error: {error}", file=sys.stderr)
            return 2
        print(
            f"\n{len(episodes)} real-art episodes x {args.duration:g} s (seeds {seeds[0]}..{seeds[-1]}; {art}, "
            + (f"{split} split of seed {args.split_seed})" if split else "all of it)")
        )
        run_tables(episodes, args)
    return 0


def run_tables(episodes: list[Path], args: argparse.Namespace) -> None:
    """One table per detector over ``episodes``."""
    for detector in args.detectors.split(","):
        print(f"\ndetector: {detector}")
        if detector != "builtin":
            config = unstable_config(detector, args)
            for episode in episodes:
                detector_settings(detector, episode, args)
            summaries = [read_unstable_summary(unstable_path(e, config)) for e in episodes]
            print(
                f"  {detector} input (level {config.level:g}, errors lasting {config.persistence} drawing(s)): mean IoU "
                f"with the truth {sum(s.mean_iou for s in summaries) / len(summaries):.3f}, miss rate "
                f"{sum(s.miss_rate for s in summaries) / len(summaries):.1%}, "
                f"{sum(s.false_positives for s in summaries)} false detections"
            )
        print(
            f"{'configuration':<32} {'J':>6} {'F':>6} {'J&F':>6} {'flicker':>8} {'FP':>4} {'FP/shot':>7} {'fps':>6}  "
            + " ".join(f"{k[:7]:>7}" for k in STAGES)
        )
        result = None
        rows = {int(r) for r in args.configs.split(",") if r} or set(range(1, len(CONFIGS) + 2))
        for row, (name, settings) in enumerate(CONFIGS.items(), 1):
            if row not in rows:
                continue
            result = EpisodeEval(SegScore.combine([]))
            for episode in episodes:
                config = load_config(
                    SegmentConfig(), None, detector_settings(detector, episode, args) + settings + args.set
                )
                result = result.add(evaluate_episode(episode, config))
            print_row(name, result)
        if result is not None:
            print(
                f"  held frames: models ran on {result.drawings} of {result.frames} frames, "
                f"{result.model_calls_saved} model calls saved ({result.model_calls_saved / result.frames:.1%}); "
                f"{result.shots} shots"
            )
        if len(CONFIGS) + 1 in rows:
            detected = EpisodeEval(SegScore.combine([]))
            for episode in episodes:
                settings = detector_settings(detector, episode, args) + CONFIGS[FULL] + args.set
                detected = detected.add(evaluate_detected_shots(episode, load_config(SegmentConfig(), None, settings)))
            print_row("same as row 4, shots detected", detected)
            print(
                "  (rows above: the true shots; the last: celmask's own shot detection, scored against the true shots;"
                " its fps leave the shot detection out)"
            )


if __name__ == "__main__":
    sys.exit(main())
