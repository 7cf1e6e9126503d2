"""What fine-tuning on a studio's own cast buys: the built-in detector before and after
``celmask train --model builtin --split-by pose`` on 10, 30 and all the cut-outs of
characters its training never showed, judged on poses of them no fine-tune saw.

    .venv/bin/python bench/finetune.py                         # 10, 30, all; about 40 min on 2 cores
    .venv/bin/python bench/finetune.py --sizes 10 --epochs 2 --images 60 --episodes 0   # a quick look
    .venv/bin/python bench/finetune.py --reuse                 # score fine-tunes already made

The "studio's cast" are the characters of the built-in detector's held-out splits
(seed 0: val and test) named in a title with three poses or more (a pose is one body drawing,
``realart.group_poses``): katawa-shoujo emi, lilly and yuuko. A third of each one's
poses (at least one) are kept back; the fine-tunes see the cut-outs of the others
(sampled evenly over characters and poses for 10 and 30), on the sets of the detector's
own training split, as a studio's cast is drawn on its own sets. Every model is then
scored (mask mAP50, imgsz 416, ultralytics' validator) on:

- ``cast, other poses``: composites of the kept-back poses on the held-out sets;
- ``other new characters``: composites of the held-out characters outside the cast
  (jigoro, webgal-demo, talking-head-anime-3): what the fine-tune costs elsewhere;
- ``generated episodes``: frames of held-out generated episodes (the product's domain);

and, with ``--episodes N``, real-art episodes built from the kept-back poses on the
held-out sets (``bench/segment.py``'s rows "detector only" and the full pipeline: J&F
and false tracks per shot). Everything lands in ``--out`` (cast folders of symlinks,
never copies of the art).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segment import CONFIGS, FULL  # noqa: E402  (bench/segment.py beside this file)

from celmask.models.training import evaluate_detector  # noqa: E402
from celmask.tasks.core.config import load_config  # noqa: E402
from celmask.tasks.eval.masks import SegScore  # noqa: E402
from celmask.tasks.eval.segment import EpisodeEval, evaluate_episode  # noqa: E402
from celmask.tasks.segment.config import SegmentConfig  # noqa: E402
from celmask.tasks.segment.model_sets import BUILTIN_DETECTOR  # noqa: E402
from celmask.tasks.synth.seeding import child_rng  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402
from celmask.tasks.trainset.composites import (  # noqa: E402
    DEFAULT_BACKGROUNDS,
    DEFAULT_CUTOUTS,
    Art,
    data_yaml,
    write_split,
)
from celmask.tasks.trainset.realart import Background, Cutout, by_split, load_backgrounds, load_cutouts  # noqa: E402

BASE_SEED = 0
"""The seed the built-in detector's splits were drawn with (models/trained/README.md)."""
MIN_POSES = 3
EVAL_MIX = {"one": 0.5, "multi": 0.5, "empty": 0.0, "episode": 0.0}
EPISODE_MIX = {"one": 0.0, "multi": 0.0, "empty": 0.0, "episode": 1.0}
ROWS = ("detector only", FULL)


def studio_cast(cutouts: list[Cutout]) -> tuple[dict[str, list[Cutout]], list[Cutout]]:
    """(cast character -> its cut-outs, the other held-out cut-outs) of the base split."""
    split = by_split(cutouts, lambda c: c.character, BASE_SEED)
    held = split["val"] + split["test"]
    by_character: dict[str, list[Cutout]] = {}
    for c in held:
        by_character.setdefault(c.character, []).append(c)
    cast = {  # named characters of a title (an unnamed folder, one "character", holds many people)
        k: v for k, v in sorted(by_character.items()) if "/" in k and len({c.pose for c in v}) >= MIN_POSES
    }
    others = [c for c in held if c.character not in cast]
    return cast, others


def kept_back(cast: dict[str, list[Cutout]], seed: int) -> tuple[list[Cutout], list[Cutout]]:
    """(pool the fine-tunes draw from, cut-outs of the kept-back poses)."""
    pool, held = [], []
    for character, cuts in cast.items():
        poses = sorted({c.pose for c in cuts})
        order = child_rng(seed, f"finetune-kept-back:{character}").permutation(len(poses))
        back = {poses[i] for i in order[: max(1, len(poses) // 3)]}
        pool += [c for c in cuts if c.pose not in back]
        held += [c for c in cuts if c.pose in back]
    return pool, held


def sample(pool: list[Cutout], n: int | None, seed: int) -> list[Cutout]:
    """``n`` cut-outs of ``pool`` (all for None), taken in turn from each (character,
    pose), each's own files in a seeded order: a few cut-outs still show every pose."""
    groups: dict[tuple[str, int], list[Cutout]] = {}
    for c in pool:
        groups.setdefault((c.character, c.pose), []).append(c)
    queues = [
        [g[i] for i in child_rng(seed, f"finetune-sample:{key[0]}", key[1]).permutation(len(g))]
        for key, g in sorted(groups.items())
    ]
    out: list[Cutout] = []
    while queues and (n is None or len(out) < n):
        queues = [q for q in queues if q]
        for q in queues:
            if n is not None and len(out) >= n:
                break
            out.append(q.pop(0))
    return out


def link_cutouts(cutouts: list[Cutout], src_root: Path, out: Path) -> Path:
    """A studio-style cast folder, ``out/<character>/<file>``, of symlinks."""
    out.mkdir(parents=True, exist_ok=True)
    for c in cutouts:
        folder = out / c.character.rsplit("/", 1)[-1]
        folder.mkdir(exist_ok=True)
        link = folder / c.name.replace("__", "-")  # no "__": the folder names the character
        if not link.exists():
            link.symlink_to(src_root / c.source / c.name)
    return out


def link_backgrounds(sets: list[Background], src_root: Path, out: Path) -> Path:
    for b in sets:
        (out / b.source).mkdir(parents=True, exist_ok=True)
        link = out / b.source / b.name
        if not link.exists():
            link.symlink_to(src_root / b.source / b.name)
    return out


def eval_set(root: Path, count: int, art: Art, mix: dict[str, float], seed: int) -> Path:
    """One scoring set: composites written as a YOLO val split; its data yaml."""
    if not (root / "data.yaml").is_file():
        write_split(root, "val", count, seed=seed, art=art, mix=mix)
        images = root / "images" / "val"
        (root / "data.yaml").write_text(
            data_yaml(root, {"train": images, "val": images}, f"bench/finetune.py scoring set {root.name}")
        )
    return root / "data.yaml"


def fine_tune(out: Path, cast_dir: Path, sets_dir: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """Run the studio's one command; (its weights, seconds)."""
    weights = out / "best.pt"
    if args.reuse and weights.is_file():
        return weights, json.loads((out / "metrics.json").read_text()).get("seconds", {}).get("total", 0.0)
    command = [
        sys.executable, "-m", "celmask.flows.cli", "train", str(out), "--model", "builtin",
        "--cutouts", str(cast_dir), "--backgrounds", str(sets_dir), "--split-by", "pose",
        "--images", str(args.images), "--val-images", str(args.val_images), "--test-images", "0",
        "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--seed", "0",
    ]  # fmt: skip
    print("  $ celmask " + " ".join(command[3:]), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT)
    return weights, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,30,all", help="cut-outs per fine-tune, comma list (default 10,30,all)")
    parser.add_argument("--images", type=int, default=240, help="training images per fine-tune (default 240)")
    parser.add_argument("--val-images", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--eval-images", type=int, default=120, help="images per scoring set (default 120)")
    parser.add_argument("--episodes", type=int, default=1, help="real-art episodes of the kept-back poses (default 1)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0, help="which poses are kept back and which cut-outs sampled")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune")
    parser.add_argument("--reuse", action="store_true", help="keep fine-tunes already in --out")
    args = parser.parse_args()
    if not DEFAULT_CUTOUTS.is_dir() or not DEFAULT_BACKGROUNDS.is_dir():
        print(
            f"bench/finetune.py: error: {DEFAULT_CUTOUTS.parent} not present: it needs ../shared/realart",
            file=sys.stderr,
        )
        return 2

    cutouts, sets = load_cutouts(DEFAULT_CUTOUTS), load_backgrounds(DEFAULT_BACKGROUNDS)
    cast, others = studio_cast(cutouts)
    pool, held = kept_back(cast, args.seed)
    set_split = by_split(sets, lambda b: b.group, BASE_SEED)
    out = args.out.resolve()
    sets_dir = link_backgrounds(set_split["train"], DEFAULT_BACKGROUNDS, out / "sets")
    for character, cuts in cast.items():
        back = sorted({c.pose for c in held if c.character == character})
        print(
            f"{character}: {len(cuts)} cut-outs, {len({c.pose for c in cuts})} poses; kept back pose(s) {back} "
            f"({sum(c.character == character for c in held)} cut-outs)"
        )
    print(
        f"pool {len(pool)} cut-outs; other new characters {len(others)} cut-outs; sets {len(set_split['train'])} (train split)"
    )

    scoring = {
        "cast, other poses": eval_set(out / "eval-cast", args.eval_images, Art(tuple(held), tuple(set_split["test"]), 1.0), EVAL_MIX, 7),
        "other new characters": eval_set(
            out / "eval-others", args.eval_images, Art(tuple(others), tuple(set_split["test"]), 1.0), EVAL_MIX, 8
        ),
        "generated episodes": eval_set(out / "eval-episodes", args.eval_images // 2, Art(), EPISODE_MIX, 9),
    }  # fmt: skip
    episodes = []
    if args.episodes:
        art_dir = out / "eval-art"
        link_cutouts(held, DEFAULT_CUTOUTS, art_dir / "cutouts")
        link_backgrounds(set_split["test"], DEFAULT_BACKGROUNDS, art_dir / "backgrounds")
        episodes = [
            ensure_episode(out / f"episode-{s}", seed=s, duration=args.duration, art=art_dir)
            for s in range(3000, 3000 + args.episodes)
        ]

    models: dict[str, tuple[Path, float, int]] = {"built-in (before)": (BUILTIN_DETECTOR, 0.0, 0)}
    for size in args.sizes.split(","):
        n = None if size == "all" else int(size)
        chosen = sample(pool, n, args.seed)
        cast_dir = link_cutouts(chosen, DEFAULT_CUTOUTS, out / f"cast-{size}")
        print(f"fine-tune on {len(chosen)} cut-outs ({len({(c.character, c.pose) for c in chosen})} poses)", flush=True)
        weights, seconds = fine_tune(out / f"ft-{size}", cast_dir, sets_dir, args)
        models[f"fine-tuned, {len(chosen)} cut-outs"] = (weights, seconds, len(chosen))

    results = {}
    header = f"{'weights':<28} {'train s':>8} " + " ".join(f"{k:>21}" for k in scoring)
    if episodes:
        header += " " + " ".join(f"{'J&F ' + r:>26} {'FP/shot':>7}" for r in ROWS)
    table = [header]
    for name, (weights, seconds, _) in models.items():
        row = {
            k: evaluate_detector(weights, y, split="val", imgsz=args.imgsz)["mask_map50"] for k, y in scoring.items()
        }
        line = f"{name:<28} {seconds:>8.0f} " + " ".join(f"{v:>21.3f}" for v in row.values())
        for r in ROWS if episodes else ():
            total = EpisodeEval(SegScore.combine([]))
            for e in episodes:
                config = load_config(
                    SegmentConfig(), None, ["detector=yolo", f"detector.weights={weights}", *CONFIGS[r]]
                )
                total = total.add(evaluate_episode(e, config))
            row[f"J&F {r}"], row[f"FP/shot {r}"] = total.score.jf, total.fp_tracks_per_shot
            line += f" {total.score.jf:>26.3f} {total.fp_tracks_per_shot:>7.2f}"
        results[name] = {"weights": str(weights), "seconds": seconds, **row}
        table.append(line)
        print(line, flush=True)
    print("\nmask mAP50 at imgsz", args.imgsz, "\n" + "\n".join(table))
    (out / "finetune.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
