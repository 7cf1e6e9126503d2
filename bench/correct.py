"""The clean-up loop: what one hand correction per track buys, and what it costs.

On generated episodes (seeds 1000, 1001, ...) and real-art episodes (real cut-outs on
real backgrounds; the characters and sets the detector held out, --split-seed 0),
the whole pipeline runs with its defaults (shot by shot, without Prefect, as
`celmask run` does) and its masks are scored against the truth. Then, on fresh
copies of the outputs for each N in --worst (default 5 and 20): the N true tracks
with the lowest J (pooled over the episodes of a kind) that a predicted track was
matched to get one correction each, through `celmask correct`'s own code
(tasks/run/correct.py), with the true mask of that track's worst frame (lowest J in
its detected shot among the frames showing at least VISIBLE of the character's
median area: a person corrects a frame where the character can be seen). Printed
per kind and N: J and J&F of those tracks and of the episodes before and after, the
share of its gap to J = 1 a correction closed on average, and the seconds a
correction takes (storing it, decoding the shot's drawings, re-propagating the
track, rewriting the shot; and with finishing the episode: table, _SUCCESS.json,
report) against the seconds the shot's own run took (its recorded stages).

    .venv/bin/python bench/correct.py                  # 3 generated + 2 real-art episodes x 30 s
    .venv/bin/python bench/correct.py --episodes 1 --duration 10 --art none --worst 5
    .venv/bin/python bench/correct.py --reuse          # keep the pipeline runs of an earlier bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from celmask.tasks.eval.masks import SegScore, region_j  # noqa: E402
from celmask.tasks.eval.segment import TRACK_KEY, score_manifest  # noqa: E402
from celmask.tasks.manifest.schema import iter_masks, read_episode_table  # noqa: E402
from celmask.tasks.run.correct import correct, make_correction  # noqa: E402
from celmask.tasks.run.finish import finish_episode  # noqa: E402
from celmask.tasks.run.plan import load_plan, plan_episode  # noqa: E402
from celmask.tasks.run.shot import run_shot  # noqa: E402
from celmask.tasks.synth import iter_truth_masks, load_truth  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402

CACHE = ROOT / ".cache" / "bench-correct"
SEED = 1000
VISIBLE = 0.25
"""Share of a character's median visible area a frame must show to be corrected."""


def segment(truth_dir: Path, out: Path, reuse: bool) -> dict[int, float]:
    """Run every shot of the episode with the default settings (unless ``reuse`` and a
    complete run is there); shot -> the seconds its run took (its stages, as recorded)."""
    video = truth_dir / "episode.mp4"
    episode = out / "ep"
    if not (reuse and (episode / "_SUCCESS.json").exists()):
        shutil.rmtree(out, ignore_errors=True)
        plan, _ = plan_episode(video, episode, {})
        for shot in plan.shots:
            run_shot(video, shot, episode, {})
        assert finish_episode(episode, plan).success is not None
    return {s.shot.index: sum(s.seconds.values()) for s in read_episode_table(episode)}


def worst_frame(episode: Path, truth_dir: Path, pred: int, true_track: int, true_start: int, true_end: int):
    """(shot, (J, frame, true mask)) of the lowest J of true track ``true_track``
    against predicted ``pred`` (shot * TRACK_KEY + track) within the predicted track's
    shot, among the frames that show at least VISIBLE of the character's median area
    (a person corrects a frame where the character can be seen, not a sliver at the
    frame's edge); None when there is none."""
    plan = load_plan(episode)
    shot = plan.shots[pred // TRACK_KEY]
    predicted = {f: m for f, _, _, m in iter_masks(episode, track=(shot.index, pred % TRACK_KEY))}
    lo, hi = max(shot.start, true_start), min(shot.end, true_end)
    seen = []
    for frame, ids, masks in iter_truth_masks(truth_dir, lo, hi):
        if true_track in ids and masks[list(ids).index(true_track)].any():
            true = masks[list(ids).index(true_track)]
            j = region_j(predicted[frame], true) if frame in predicted else 0.0
            seen.append((j, frame, int(true.sum())))
    if not seen:
        return shot, None
    least = VISIBLE * statistics.median(area for *_, area in seen)
    j, frame, _ = min(x for x in seen if x[2] >= least)
    _, ids, masks = next(iter_truth_masks(truth_dir, frame, frame + 1))
    return shot, (j, frame, masks[list(ids).index(true_track)].copy())


def bench(kind: str, episodes: list[tuple[str, Path]], worst: list[int], reuse: bool) -> list[dict]:
    """Correct the N worst tracks of ``episodes`` (name, truth folder), pooled, for each N."""
    shot_seconds, before = {}, {}
    for name, truth_dir in episodes:
        start = time.perf_counter()
        shot_seconds[name] = segment(truth_dir, CACHE / name / "out", reuse)
        before[name] = score_manifest(CACHE / name / "out" / "ep", truth_dir)
        print(f"{name}: {len(shot_seconds[name])} shots, {time.perf_counter() - start:.0f} s", flush=True)
    truths = dict(episodes)
    ends = {name: {s.start: s.end for s in load_truth(t).shots} for name, t in episodes}
    pool = sorted(
        (
            (t.j, name, t.shot_start, t.track_id, t)
            for name, score in before.items()
            for t in score.tracks
            if t.matched is not None
        ),
        key=lambda x: x[:4],
    )
    rows = []
    for n in worst:
        for name, _ in episodes:
            work = CACHE / name / f"worst{n}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(CACHE / name / "out", work)
        chosen = pool[:n]
        seconds, shots = [], []
        for _, name, shot_start, track_id, t in chosen:
            episode = CACHE / name / f"worst{n}" / "ep"
            shot, found = worst_frame(episode, truths[name], t.matched, track_id, shot_start, ends[name][shot_start])
            if found is None:
                continue
            _, frame, mask = found
            tick = time.perf_counter()
            fix = make_correction(episode, shot, t.matched % TRACK_KEY, frame, mask, who="bench")
            done = correct(episode, [fix], truths[name] / "episode.mp4")
            seconds.append((done.seconds, time.perf_counter() - tick))
            shots.append(shot_seconds[name][shot.index])
        after = {name: score_manifest(CACHE / name / f"worst{n}" / "ep", truths[name]) for name, _ in episodes}
        by_key = {(name, a.shot_start, a.track_id): a for name, score in after.items() for a in score.tracks}
        pairs = [(t, by_key[(name, shot_start, track_id)]) for _, name, shot_start, track_id, t in chosen]
        gaps = [(a.j - b.j) / (1 - b.j) for b, a in pairs if b.j < 1]
        rows.append(
            {
                "episode": f"{kind} ({len(episodes)})",
                "n": len(chosen),
                "tracks": len(pool),
                "j": (np.mean([b.j for b, _ in pairs]), np.mean([a.j for _, a in pairs])),
                "jf": (np.mean([(b.j + b.f) / 2 for b, _ in pairs]), np.mean([(a.j + a.f) / 2 for _, a in pairs])),
                "gap": float(np.mean(gaps)) if gaps else float("nan"),
                "episode_jf": (SegScore.combine(before.values()).jf, SegScore.combine(after.values()).jf),
                "apply": statistics.median(s for s, _ in seconds),
                "with_finish": statistics.median(w for _, w in seconds),
                "shot": statistics.median(shots),
                "faster": sum(s < r for (s, _), r in zip(seconds, shots)),
            }
        )
        print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    return (
        f"| {r['episode']} | {r['n']} of {r['tracks']} | {r['j'][0]:.3f} → {r['j'][1]:.3f} | "
        f"{r['jf'][0]:.3f} → {r['jf'][1]:.3f} | {r['gap']:.2f} | {r['episode_jf'][0]:.3f} → {r['episode_jf'][1]:.3f} | "
        f"{r['apply']:.1f} ({r['with_finish']:.1f}) | {r['shot']:.1f} | {r['faster']}/{r['n']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--episodes", type=int, default=3, help="generated episodes (seeds 1000, 1001, ...)")
    parser.add_argument("--art-episodes", type=int, default=2, help="real-art episodes")
    parser.add_argument("--worst", default="5,20", help="how many of the worst tracks to correct, comma-separated")
    parser.add_argument("--art", default=str(ROOT.parent / "shared" / "realart"), help="real-art folder, or none")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep complete pipeline runs from an earlier bench")
    args = parser.parse_args()
    worst = [int(n) for n in args.worst.split(",")]
    kinds = [("generated", args.episodes, {})]
    if args.art != "none" and Path(args.art).is_dir():
        kinds.append(("real-art", args.art_episodes, dict(art=args.art, art_split="test", split_seed=args.split_seed)))
    rows = []
    for kind, count, extra in kinds:
        episodes = [
            (
                f"{kind}-{seed}",
                ensure_episode(CACHE / f"{kind}-{seed}" / "truth", seed=seed, duration=args.duration, **extra),
            )
            for seed in range(SEED, SEED + count)
        ]
        if episodes:
            rows += bench(kind, episodes, worst, args.reuse)
    print(
        "\n| episodes | tracks corrected | their J | their J&F | gap closed | episodes' J&F | "
        "s per correction (with finish) | shot's run s | faster than the shot |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_line(r))


if __name__ == "__main__":
    main()
