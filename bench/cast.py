"""The cast: does one character keep one identity across the episode's shots?

Every episode (generated, and real-art: real cut-outs on real backgrounds, by
default only the characters and sets the detector held out) is run whole through
``celmask run`` (detected shots, the built-in detector, the finish step's cast).
Predicted tracks are matched to true ones within each true shot (the masks'
matching, tasks/eval/masks.py); then over every pair of matched tracks in different
shots: the truth says same character or not (its ``character_id``), the cast says
the same when both have one ``character_id``. Printed per kind: pairwise
precision, recall and F1; tracks left unassigned; with enrolment (one reference
per true character: its real cut-outs for real art, one true drawing cut out of the
episode for generated ones) the same, and how many tracks got their true name;
and the cast's cost: seconds (wall and CPU, ffmpeg's included) to compute it from
nothing (signatures decoded again) as a share of the episode's segmentation seconds
(the per-stage seconds of ``_SUCCESS.json``).

    .venv/bin/python bench/cast.py                       # 5 generated + 4 real-art episodes x 30 s
    .venv/bin/python bench/cast.py --episodes 1 --art-episodes 0 --duration 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celmask.tasks.cast.enrol import load_enrolment, save_enrolment  # noqa: E402
from celmask.tasks.cast.episode import compute_cast  # noqa: E402
from celmask.tasks.eval.segment import matched_characters  # noqa: E402
from celmask.tasks.manifest.layout import enrolment_path, run_dir  # noqa: E402
from celmask.tasks.synth import iter_truth_masks, load_truth  # noqa: E402
from celmask.tasks.synth.realepisode import ART_NAME  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402

SHARED_ART = ROOT.parent / "shared" / "realart"
CELMASK = ROOT / ".venv" / "bin" / "celmask"


def pair_counts(truth: dict[tuple[int, int], int], predicted: dict[tuple[int, int], int | None]) -> np.ndarray:
    """(true positives, false positives, false negatives) over pairs in different shots."""
    out = np.zeros(3, int)
    for a, b in itertools.combinations(sorted(truth), 2):
        if a[0] == b[0]:
            continue
        same = truth[a] == truth[b]
        said = predicted.get(a) is not None and predicted.get(a) == predicted.get(b)
        out += (same and said, said and not same, same and not said)
    return out


def prf(counts: np.ndarray) -> tuple[float, float, float]:
    tp, fp, fn = (int(v) for v in counts)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def references(truth_dir: Path, dest: Path, art: Path | None) -> None:
    """One folder per true character (named ``c<id>``): its real cut-outs, or one true
    drawing (its largest mask) cut out of the generated episode."""
    shutil.rmtree(dest, ignore_errors=True)
    if (truth_dir / ART_NAME).is_file():
        for c in json.loads((truth_dir / ART_NAME).read_text())["cast"]:
            folder = dest / f"c{c['character_id']}"
            folder.mkdir(parents=True)
            for name in c["cutouts"]:
                shutil.copy(art / "cutouts" / name, folder / Path(name).name)
        return
    from celmask.tasks.video import iter_frames

    best: dict[int, tuple[int, int, int]] = {}
    truth = load_truth(truth_dir)
    for s in truth.shots:
        for frame, ids, masks in iter_truth_masks(truth_dir, s.start, s.end):
            for t, m in zip(ids.tolist(), masks):
                c = next(x.character_id for x in s.tracks if x.track_id == t)
                if int(m.sum()) > best.get(c, (0, 0, 0))[0]:
                    best[c] = (int(m.sum()), frame, t)
    for c, (_, frame, t) in sorted(best.items()):
        image = next(f.image for f in iter_frames(truth_dir / "episode.mp4", start=frame, end=frame + 1))
        _, ids, masks = next(iter_truth_masks(truth_dir, frame, frame + 1))
        mask = masks[list(ids).index(t)]
        ys, xs = np.nonzero(mask)
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        rgba = np.dstack([image[box], mask[box].astype(np.uint8) * 255])
        (dest / f"c{c}").mkdir(parents=True)
        Image.fromarray(rgba).save(dest / f"c{c}" / "ref.png")


def evaluate(out: Path, truth_dir: Path, art: Path | None, refs: Path) -> dict:
    truth = matched_characters(out, truth_dir)
    for p in run_dir(out).glob("cast_*.json"):
        p.unlink()  # the cost from nothing: every signature decoded again
    start, cpu = time.perf_counter(), _cpu()
    result = compute_cast(out, str(truth_dir / "episode.mp4"))
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    success = json.loads((out / "_SUCCESS.json").read_text())
    predicted = {(t.shot_index, t.track_id): t.character_id for t in result.tracks}
    plain = pair_counts(truth, predicted)
    unassigned = sum(predicted.get(k) is None for k in truth)
    references(truth_dir, refs, art)
    save_enrolment(out, load_enrolment(refs))
    named = compute_cast(out, str(truth_dir / "episode.mp4"))
    enrolment_path(out).unlink()
    compute_cast(out, str(truth_dir / "episode.mp4"))  # back to the run's own cast
    enrolled = pair_counts(truth, {(t.shot_index, t.track_id): t.character_id for t in named.tracks})
    names = {(t.shot_index, t.track_id): t.character for t in named.tracks}
    right = sum(names.get(k) == f"c{c}" for k, c in truth.items())
    return {
        "plain": plain,
        "enrolled": enrolled,
        "tracks": len(truth),
        "unassigned": unassigned,
        "named_right": right,
        "cast_seconds": seconds,
        "cast_cpu": cpu,
        "episode_seconds": sum(success["seconds"].values()),
    }


def _cpu() -> float:
    """CPU seconds of this process and its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(video: Path, out_root: Path, name: str) -> Path:
    """The episode run whole, unless a complete run of this very video is there."""
    from celmask.tasks.video import fingerprint

    out = out_root / name
    success = out / "_SUCCESS.json"
    if not success.exists() or json.loads(success.read_text())["video_fingerprint"] != fingerprint(video):
        subprocess.run(
            [str(CELMASK), "run", str(video), "--out", str(out_root), "--episode-id", name, "--workers", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--art-episodes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-cast")
    parser.add_argument("--art", type=Path, default=SHARED_ART)
    args = parser.parse_args()
    kinds = [("generated", f"gen-{s}", s, None) for s in range(args.first_seed, args.first_seed + args.episodes)]
    if args.art.is_dir():
        kinds += [
            ("real art", f"art-{s}", s, args.art) for s in range(args.first_seed, args.first_seed + args.art_episodes)
        ]
    totals: dict[str, dict] = {}
    for kind, name, seed, art in kinds:
        truth_dir = ensure_episode(
            args.cache / name,
            seed=seed,
            duration=args.duration,
            art=art,
            art_split="test" if art else None,
            split_seed=0,
        )
        out = run(truth_dir / "episode.mp4", args.cache / "out", name)
        r = evaluate(out, truth_dir, art, args.cache / "refs" / name)
        print(
            f"{kind:<10} {name:<9} tracks {r['tracks']:>3} unassigned {r['unassigned']:>2}  "
            f"P/R/F1 {'/'.join(f'{v:.3f}' for v in prf(r['plain']))}  enrolled "
            f"{'/'.join(f'{v:.3f}' for v in prf(r['enrolled']))} named {r['named_right']}/{r['tracks']}  "
            f"cast {r['cast_seconds']:.1f} s ({r['cast_cpu']:.1f} s CPU) of {r['episode_seconds']:.0f} s",
            flush=True,
        )
        t = totals.setdefault(kind, {k: 0 for k in r})
        for k, v in r.items():
            t[k] = t[k] + v
    print(
        f"\n{'kind':<10} {'tracks':>6} {'unassigned':>10} {'P':>6} {'R':>6} {'F1':>6} | enrolled {'F1':>6} named | cost"
    )
    for kind, t in totals.items():
        p, r, f = prf(t["plain"])
        print(
            f"{kind:<10} {t['tracks']:>6} {t['unassigned']:>10} {p:>6.3f} {r:>6.3f} {f:>6.3f} | "
            f"{prf(t['enrolled'])[2]:>15.3f} {t['named_right'] / max(1, t['tracks']):>5.0%} | "
            f"{t['cast_seconds']:.1f} s ({t['cast_cpu']:.1f} s CPU) = "
            f"{t['cast_seconds'] / max(1e-9, t['episode_seconds']):.1%} of segmentation"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
