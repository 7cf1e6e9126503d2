"""The whole pipeline side by side with what a user would build instead, in one run, on the same clips.

Rows, each in a process of its own (so that its peak RSS is its own), on a generated
and a real-art clip (real cut-outs on real backgrounds, the art's test split):

- ``celmask``: default settings; shot detection, then every shot segmented
  (decode, detect per unique drawing, tracks, keyframes, propagation, refinement);
  the manifest is not written;
- ``per-frame``: the same detector on every frame, nothing else (decode, detect);
- ``seed``: the pipeline a user would assemble from the seeds and ultralytics, given
  celmask's shots: YOLO-seg (the same detector) on every frame, per shot a keyframe
  chosen by detection confidence, ultralytics' SAM 2 video predictor (``sam2_t``
  architecture) forward and in reverse from it with all its detections prompted, SAM
  (``vit_b``) box-and-mask refinement on every frame. Nothing can download weights,
  so SAM 2 and SAM run with RANDOMLY INITIALISED weights of the real architectures:
  their speed does not depend on their weights, their masks are noise, so the row is
  labelled "speed only" and has no quality. They are slow on a CPU, so per shot they
  are timed on ``--seed-frames`` frames of one shot (SAM 2: that many steps each way)
  and their time per frame is counted for every frame they would run on.

Printed per row: frames/s overall and per stage, model calls, peak RSS, and the ratio of
its wall time to celmask's. Frames/s are a loaded machine's unless it is idle: compare
the ratios, measured side by side.

``--cast``: one generated shot with 4 characters and the same shot with only 1 of them
(tasks/synth: the same plan, its other characters removed), segmented with default
settings, alternately ``--repeat`` times: seconds per stage (best of the repeats) and
the ratio, with the flows computed (each pair of drawings once per shot: the cost of
propagation grows with the cast only by each track's own mask work).

``--rss M[,M...]``: peak RSS of ``celmask run --workers 2`` on generated episodes of
M minutes each (memory must not grow with the episode).

    .venv/bin/python bench/pipeline.py --quick            # 4 s clips, 2 timed frames: a few minutes on 2 cores
    .venv/bin/python bench/pipeline.py                    # 12 s clips, 4 timed frames
    .venv/bin/python bench/pipeline.py --cast --no-table  # the 1 vs 4 character shot only
    .venv/bin/python bench/pipeline.py --rss 1,5,10 --no-table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from celmask.tasks.core.config import load_config  # noqa: E402
from celmask.tasks.core.instances import Instances  # noqa: E402
from celmask.tasks.core.types import Shot  # noqa: E402
from celmask.tasks.segment.config import SegmentConfig  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402

SHARED_ART = ROOT.parent / "shared" / "realart"
CLIP_SEED = 4005
"""The clips' generator seed: characters on screen and moving from the first second (4 s: one
shot of 2 characters; 12 s: 3 shots), no seed a test or the detector's training used."""
ROWS = {
    "celmask": "celmask, default settings",
    "per-frame": "per-frame baseline (detector only)",
    "seed": "seed pipeline (speed only)",
}
STAGES = ("shots", "decode", "detect", "track", "keyframes", "propagate", "refine")
SEED_STAGES = {"propagate": "sam2", "refine": "sam"}


def _work_frames(video: Path, shot: Shot | None, config: SegmentConfig):
    from celmask.tasks.segment.shot import work_size
    from celmask.tasks.video import iter_frames, output_size, probe

    width, height = work_size(output_size(probe(video), None, None), config.work_size)
    if shot is None:
        return iter_frames(video, width=width, height=height)
    return iter_frames(video, start=shot.start, end=shot.end, width=width, height=height)


def _cpu() -> float:
    """CPU seconds used so far by this process and the processes it waited for (ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _warm(detector, video: Path, config: SegmentConfig) -> None:
    """One detection before the clock starts: the model's lazy set-up is no stage's time."""
    detector.detect([next(iter(_work_frames(video, None, config)))])


def _shots(video: Path, seconds: dict[str, float]) -> list[Shot]:
    from celmask.tasks.shots.detect import detect_shots

    start = time.perf_counter()
    shots = detect_shots(video).shots
    seconds["shots"] = time.perf_counter() - start
    return list(shots)


def run_celmask(video: Path) -> dict:
    from celmask.tasks.segment.model_sets import build_models
    from celmask.tasks.segment.shot import segment_shot

    config = SegmentConfig()
    seconds: dict[str, float] = {}
    cpu = _cpu()
    shots = _shots(video, seconds)
    cpu = _cpu() - cpu
    models = build_models(config)
    _warm(models.detector, video, config)
    frames = drawings = flows = 0
    cpu -= _cpu()
    for shot in shots:
        with models.propagator.sharing() as shared:
            result = segment_shot(video, shot, config, models=models)
        for stage, s in result.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
        frames += len(result.frame_indices)
        drawings += len(result.instances)
        flows += 2 * shared.computed["flows"]
    calls = f"detector {drawings}, DIS flows {flows}, pieces {drawings}"
    return {"frames": frames, "seconds": seconds, "cpu": cpu + _cpu(), "calls": calls}


def run_per_frame(video: Path) -> dict:
    from celmask.tasks.segment.model_sets import build_models

    config = SegmentConfig()
    detector = build_models(load_config(config, None, ["propagator=none", "refiner=none"])).detector
    _warm(detector, video, config)
    seconds = {"decode": 0.0, "detect": 0.0}
    frames = 0
    batch = []
    cpu = _cpu()
    clock = time.perf_counter()
    for frame in _work_frames(video, None, config):
        batch.append(frame)
        now = time.perf_counter()
        seconds["decode"] += now - clock
        clock = now
        if len(batch) == config.detector_batch:
            frames += len(detector.detect(batch))
            batch = []
            now = time.perf_counter()
            seconds["detect"] += now - clock
            clock = now
    frames += len(detector.detect(batch)) if batch else 0
    seconds["detect"] += time.perf_counter() - clock
    return {"frames": frames, "seconds": seconds, "cpu": _cpu() - cpu, "calls": f"detector {frames}"}


def _random_seed_models(device: str = "cpu"):
    """SAM 2 (sam2_t) and SAM (vit_b) with random weights: the real architectures, nothing loaded."""
    import torch
    from segment_anything import build_sam_vit_b

    from celmask.models.propagators.sam2 import Sam2Config, Sam2Propagator
    from celmask.models.refiners.sam import SamRefiner
    from celmask.models.ultralytics_env import ultralytics_offline

    ultralytics_offline()
    from ultralytics.models.sam.build import build_sam2_t

    torch.manual_seed(0)
    sam2 = Sam2Propagator.from_model(build_sam2_t(None), "sam2_t:random-init", Sam2Config(device=device))
    sam = SamRefiner(build_sam_vit_b(None), weights="random-init", device=device)
    return sam2, sam


def run_seed(video: Path, seed_frames: int) -> dict:
    """The seed pipeline on celmask's shots (see the module docstring). YOLO runs on every
    frame; SAM 2 and SAM cost about the same per frame in every shot (their image
    encoders dominate), so they are timed on ``seed_frames`` frames of the longest shot
    with detections and that time per frame is counted for every frame they would run on."""
    from celmask.tasks.segment.model_sets import build_models

    config = SegmentConfig()
    seconds: dict[str, float] = {"decode": 0.0, "detect": 0.0}
    shots = _shots(video, {})  # given to it: not its time
    detector = build_models(load_config(config, None, ["propagator=none", "refiner=none"])).detector
    _warm(detector, video, config)
    frames = 0
    cpu = _cpu()
    prompted: list[tuple[list[np.ndarray], int, np.ndarray]] = []  # per shot with detections: frames, key, masks
    for shot in shots:
        clock = time.perf_counter()
        decoded = list(_work_frames(video, shot, config))
        seconds["decode"] += time.perf_counter() - clock
        clock = time.perf_counter()
        detections = detector.detect(decoded)
        seconds["detect"] += time.perf_counter() - clock
        frames += len(decoded)
        scores = [float(d.score.mean()) if len(d) else -1.0 for d in detections]
        key = int(np.argmax(scores))
        if scores[key] >= 0:  # else nothing to prompt, nothing to refine
            prompted.append(([f.image for f in decoded], key, detections[key].mask))
    cpu = _cpu() - cpu
    sam2_frames = sum(len(images) - 1 for images, _, _ in prompted)
    sam_frames = sum(len(images) for images, _, _ in prompted)
    steps = images_timed = 0
    if prompted:
        images, key, masks = max(prompted, key=lambda p: len(p[0]))
        sam2, sam = _random_seed_models()
        clock, used = time.perf_counter(), _cpu()
        propagated = {key: masks}
        for direction, order in ((1, images[key:]), (-1, images[key::-1])):
            for i, (out, _) in enumerate(sam2.propagate(order[: seed_frames + 1], masks), 1):
                propagated[key + direction * i] = out
            steps += min(seed_frames, len(order) - 1)
        seconds["propagate"] = (time.perf_counter() - clock) * sam2_frames / max(1, steps)
        cpu += (_cpu() - used) * sam2_frames / max(1, steps)
        sample = sorted(propagated, key=lambda s: abs(s - key))[:seed_frames]
        instances = [Instances.from_masks(propagated[s], score=np.ones(len(masks), np.float32)) for s in sample]
        clock, used = time.perf_counter(), _cpu()
        sam.refine([images[s] for s in sample], instances)  # an image embedding and the prompts per frame
        images_timed = len(sample)
        seconds["refine"] = (time.perf_counter() - clock) * sam_frames / images_timed
        cpu += (_cpu() - used) * sam_frames / images_timed
    calls = (
        f"detector {frames}, SAM 2 {sam2_frames} steps ({steps} timed), SAM {sam_frames} images ({images_timed} timed)"
    )
    return {"frames": frames, "seconds": seconds, "cpu": cpu, "calls": calls}


def _child(args: argparse.Namespace) -> int:
    video = Path(args.row_video)
    if args.row == "celmask":
        out = run_celmask(video)
    elif args.row == "per-frame":
        out = run_per_frame(video)
    else:
        out = run_seed(video, args.seed_frames)
    print(json.dumps(out))
    return 0


def _in_child(argv: list[str]) -> tuple[str, int, float]:
    """Run ``argv`` in a new process: its stdout, its peak RSS in bytes (the largest of it
    and the processes it started and waited for) and the CPU seconds they all used."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{err.read()[-3000:]}")
        return out.read(), usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def clips(args: argparse.Namespace) -> list[tuple[str, Path]]:
    out = [("generated", ensure_episode(args.cache / f"gen-{args.duration:g}", seed=CLIP_SEED, duration=args.duration))]
    art = Path(args.art)
    if args.art.lower() != "none" and art.is_dir():
        out.append(
            (
                "real-art",
                ensure_episode(
                    args.cache / f"art-{args.duration:g}",
                    seed=CLIP_SEED,
                    duration=args.duration,
                    art=art,
                    art_split="test",
                    split_seed=0,
                ),
            )
        )
    return out


def table(args: argparse.Namespace) -> None:
    for name, episode in clips(args):
        video = episode / "episode.mp4"
        print(
            f"\n{name} clip: {video} ({args.duration:g} s, 640x360), SAM 2 and SAM timed on {args.seed_frames} frames"
        )
        print(
            f"{'row':<36} {'fps':>6} {'x real':>6} {'wall/celmask':>12} {'CPU/celmask':>11}  "
            + " ".join(f"{s[:9]:>9}" for s in STAGES)
            + f" {'peak RSS':>9}  model calls"
        )
        base = cpu_base = None
        for row in ("celmask", "per-frame", "seed"):
            answer, rss, _ = _in_child(
                [
                    sys.executable,
                    __file__,
                    "--row",
                    row,
                    "--row-video",
                    str(video),
                    "--seed-frames",
                    str(args.seed_frames),
                ]
            )
            out = json.loads(answer.strip().splitlines()[-1])
            cpu = out["cpu"]
            wall = sum(out["seconds"].values())
            base, cpu_base = base or wall, cpu_base or cpu
            fps = out["frames"] / wall
            stages = " ".join(
                f"{out['frames'] / out['seconds'][s]:>9.1f}" if out["seconds"].get(s) else f"{'-':>9}" for s in STAGES
            )
            memory = f"{rss / 2**20:.0f} MiB"
            print(
                f"{ROWS[row]:<36} {fps:>6.1f} {fps / 23.976:>6.2f} {wall / base:>12.2f} {cpu / cpu_base:>11.2f}  {stages} {memory:>9}  {out['calls']}",
                flush=True,
            )


def cast_shot(args: argparse.Namespace) -> None:
    """The 4-character shot against the same shot with 1 character (see the module docstring)."""
    from celmask.tasks.segment.model_sets import build_models
    from celmask.tasks.segment.shot import segment_shot
    from celmask.tasks.synth.render import episode_frames, write_episode
    from celmask.tasks.synth.suite import DEFAULT_FPS
    from celmask.tasks.synth.timeline import plan_timeline

    frames = episode_frames(20.0, DEFAULT_FPS)
    for seed in range(1000):
        plan = plan_timeline(seed, frame_count=frames, width=640, height=360, fps=DEFAULT_FPS)
        busy = [
            s for s in plan.shots if len(s.characters) == 4 and s.content_end - s.content_start >= 72 and not s.flashes
        ]
        if busy:
            break
    chosen = busy[0]
    videos = {}
    for cast in (4, 1):
        shots = tuple(replace(s, characters=s.characters[:cast]) if s is chosen else s for s in plan.shots)
        out = args.cache / f"cast-{seed}-{chosen.index}-{cast}"
        if not (out / "truth.json").is_file():
            write_episode(out, replace(plan, shots=shots))
        videos[cast] = out / "episode.mp4"
    shot = Shot(chosen.index, chosen.start, chosen.end, 0.0, 0.0)
    config = SegmentConfig()
    models = build_models(config)
    segment_shot(videos[1], shot, config, models=models)  # warm-up: first inference
    best: dict[int, dict[str, float]] = {}
    flows: dict[int, int] = {}
    tracks: dict[int, int] = {}
    for _ in range(args.repeat):
        for cast in (4, 1):
            with models.propagator.sharing() as shared:
                result = segment_shot(videos[cast], shot, config, models=models)
            seconds = dict(result.seconds, total=sum(result.seconds.values()))
            best[cast] = {k: min(v, best.get(cast, {}).get(k, v)) for k, v in seconds.items()}
            flows[cast], tracks[cast] = 2 * shared.computed["flows"], len(result.keyframes)
    print(
        f"\ncast: generated shot {chosen.index} of seed {seed} ({shot.end - shot.start} frames, "
        f"{len(chosen.drawings)} drawings), 4 characters against the same shot with 1; "
        f"best of {args.repeat}, seconds"
    )
    keys = ("total", "decode", "detect", "track", "keyframes", "propagate", "refine")
    print(f"{'cast':<22} " + " ".join(f"{k[:9]:>9}" for k in keys) + f" {'DIS flows':>9}")
    for cast in (4, 1):
        label = f"{cast} character(s), {tracks[cast]} tracks"
        print(f"{label:<22} " + " ".join(f"{best[cast].get(k, 0.0):>9.2f}" for k in keys) + f" {flows[cast]:>9}")
    ratio = " ".join(f"{best[4].get(k, 0.0) / best[1][k]:>9.2f}" if best[1].get(k) else f"{'-':>9}" for k in keys)
    print(f"{'ratio 4 / 1':<22} {ratio}")


def peak_rss(args: argparse.Namespace) -> None:
    """Peak RSS of ``celmask run`` on generated episodes of the given minutes."""
    print("\npeak RSS of `celmask run VIDEO --out OUT --workers 2` (the largest of its processes)")
    print(f"{'episode':<12} {'frames':>7} {'wall s':>8} {'peak RSS':>10}")
    celmask = Path(sys.executable).parent / "celmask"
    for minutes in (float(m) for m in args.rss.split(",")):
        episode = ensure_episode(args.cache / f"rss-{minutes:g}min", seed=4100, duration=60 * minutes)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            run = [str(celmask), "run", str(episode / "episode.mp4"), "--out", out, "--workers", "2"]
            _, rss, _ = _in_child(run)
            wall = time.perf_counter() - start
        frames = json.loads((episode / "truth.json").read_text())["frame_count"]
        print(f"{minutes:>6g} min {frames:>9} {wall:>8.0f} {rss / 2**20:>7.0f} MiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s clips, SAM 2 and SAM timed on 2 frames")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of each clip (default 12)")
    parser.add_argument("--seed-frames", type=int, default=4, help="frames SAM 2 and SAM are timed on (default 4)")
    parser.add_argument("--art", default=str(SHARED_ART), help="real art for the real-art clip, or none")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-pipeline")
    parser.add_argument("--no-table", action="store_true", help="skip the side-by-side table")
    parser.add_argument("--cast", action="store_true", help="also: the 4 against 1 character shot")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of --cast (best is kept)")
    parser.add_argument("--rss", default="", help="also: peak RSS of celmask run on episodes of these minutes")
    parser.add_argument("--row", choices=tuple(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--row-video", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return _child(args)
    if args.quick:
        args.duration, args.seed_frames = 4.0, 2
    if not args.no_table:
        table(args)
    if args.cast:
        cast_shot(args)
    if args.rss:
        peak_rss(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
