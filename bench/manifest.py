"""Mask manifest: what writing and reading a whole episode costs at 1080p.

Generates a 24-minute episode's worth of segmentation results (34,560 frames at
24 fps, shots of 2-8 s, 1-5 characters per shot, 2.5 per frame on average, each
drawing held for 2 or 3 frames; a character is a body, a head and two limbs that
move and change pose every drawing) at the working resolution 960x540, writes them
as the manifest at the source resolution 1920x1080 (so upscaling is included), then
reads them back. Printed: write rows/s, masks encoded/s and seconds for the episode,
bytes per row and per distinct mask, read rows/s, masks decoded/s (celmask's decoder,
and pycocotools' for comparison), validation seconds; the upscaling methods against
the true shapes (how ``UPSCALE_SIGMA`` was chosen); and, on a generated 1080p
episode segmented for real (made once into .cache/bench-manifest), the share of the
shots' time that writing the manifest takes.

    .venv/bin/python bench/manifest.py                 # 24 minutes: ~2 min on 2 busy cores
    .venv/bin/python bench/manifest.py --minutes 2 --no-segment
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pycocotools import mask as mask_util  # noqa: E402

from celmask.models.detectors.yolo import FileDetector  # noqa: E402
from celmask.tasks.core.config import load_config  # noqa: E402
from celmask.tasks.core.instances import Instances  # noqa: E402
from celmask.tasks.core.rle import decode_mask, encode_mask  # noqa: E402
from celmask.tasks.core.types import Shot  # noqa: E402
from celmask.tasks.manifest.schema import dataset, iter_masks, shot_files  # noqa: E402
from celmask.tasks.manifest.write import finalize_episode, upscale_mask, write_episode_table, write_shot  # noqa: E402
from celmask.tasks.segment.config import SegmentConfig  # noqa: E402
from celmask.tasks.segment.keyframes import Candidate  # noqa: E402
from celmask.tasks.segment.model_sets import build_models  # noqa: E402
from celmask.tasks.segment.shot import ShotSegmentation, segment_shot  # noqa: E402
from celmask.tasks.synth import load_truth  # noqa: E402
from celmask.tasks.synth.suite import ensure_episode  # noqa: E402
from celmask.tasks.synth.unstable import UnstableConfig, write_unstable_detections  # noqa: E402
from celmask.tasks.video import probe  # noqa: E402

WORK = (540, 960)
"""(height, width) of the masks: what segment_shot works at for 1080p video."""
SOURCE = (1080, 1920)
FPS = 24
ITER_MASKS = 20000
"""Masks read back through iter_masks (enough for a steady rate)."""


def character(canvas: np.ndarray, x: float, y: float, scale: float, pose: float) -> None:
    """Draw a character-like blob (body, head, two limbs) into ``canvas`` as 1s."""
    s = scale
    centre = (int(x), int(y))
    cv2.ellipse(canvas, centre, (int(35 * s), int(80 * s)), 8 * np.sin(pose), 0, 360, 1, -1)
    cv2.circle(canvas, (int(x + 6 * s * np.sin(pose)), int(y - 105 * s)), int(30 * s), 1, -1)
    for side in (-1, 1):
        angle = np.pi / 2 + side * (0.6 + 0.4 * np.sin(pose + side))
        end = (int(x + 90 * s * np.cos(angle) * side), int(y + 90 * s * np.sin(angle)))
        cv2.line(canvas, centre, end, 1, max(2, int(9 * s)))


def synth_shot(index: int, start: int, frames: int, rng: np.random.Generator) -> ShotSegmentation:
    """A shot's segmentation with moving characters, at WORK size for a SOURCE-size video."""
    holds = []
    while sum(holds) < frames:
        holds.append(int(rng.choice([2, 2, 3])))
    drawing = np.repeat(np.arange(len(holds)), holds)[:frames]
    n_drawings = int(drawing[-1]) + 1
    first_frame = [start + int(np.argmax(drawing == d)) for d in range(n_drawings)]
    chars = [
        dict(
            x=rng.uniform(150, 810),
            y=rng.uniform(200, 400),
            vx=rng.uniform(-6, 6),
            vy=rng.uniform(-2, 2),
            scale=rng.uniform(0.6, 1.6),
            first=int(rng.integers(0, n_drawings // 8 + 1)),
            last=int(rng.integers(7 * n_drawings // 8, n_drawings + 1)),
            key=0,
        )
        for _ in range(int(rng.integers(1, 6)))
    ]
    for c in chars:
        c["key"] = (c["first"] + c["last"]) // 2
    instances = []
    for d in range(n_drawings):
        present = [(t, c) for t, c in enumerate(chars) if c["first"] <= d < c["last"]]
        masks = np.zeros((len(present), *WORK), np.uint8)
        for m, (_, c) in zip(masks, present):
            character(m, c["x"] + c["vx"] * d, c["y"] + c["vy"] * d, c["scale"], 0.5 * d)
        key = np.array([c["key"] for _, c in present], np.int64)
        instances.append(
            Instances.from_masks(
                masks.astype(bool),
                score=rng.uniform(0.3, 1.0, len(present)).astype(np.float32),
                track_id=np.array([t for t, _ in present], np.int32),
                data={
                    "source": np.where(key == d, 0, rng.integers(1, 3, len(present))).astype(np.int8),
                    "keyframe_frame": np.array([first_frame[k] for k in key], np.int64),
                    "is_keyframe": key == d,
                },
            )
        )
    frame_indices = np.arange(start, start + frames, dtype=np.int64)
    keyframes = {
        t: [Candidate(t, c["key"], first_frame[c["key"]], 0.8, {"confidence": 0.9, "quality": 0.7})]
        for t, c in enumerate(chars)
        if c["first"] < c["last"]
    }
    shot = Shot(index, start, start + frames, start / FPS, (start + frames) / FPS)
    return ShotSegmentation(
        shot,
        frame_indices,
        frame_indices / FPS,
        drawing,
        instances,
        WORK,
        SOURCE,
        keyframes,
        keyframes,
        {"detector": "bench"},
        {},
    )


def upscaling_table(shapes: int = 12) -> None:
    """Wrong pixels and boundary distance of each way to upscale a 960x540 mask to 1080p."""
    rng = np.random.default_rng(5)
    methods = {
        "nearest": lambda s: cv2.resize(s.view(np.uint8), SOURCE[::-1], interpolation=cv2.INTER_NEAREST) > 0,
        "bilinear >= 0.5": lambda s: (
            cv2.resize(s.astype(np.float32), SOURCE[::-1], interpolation=cv2.INTER_LINEAR) >= 0.5
        ),
        "celmask (smoothed)": lambda s: upscale_mask(s, SOURCE),
    }
    scores = {name: [] for name in methods}
    for _ in range(shapes):
        truth = np.zeros(SOURCE, np.uint8)
        character(truth, rng.uniform(500, 1400), rng.uniform(400, 700), rng.uniform(1.5, 3.0), rng.uniform(0, 6))
        truth = truth.astype(bool)
        work = cv2.resize(truth.astype(np.float32), WORK[::-1], interpolation=cv2.INTER_AREA) >= 0.5
        edge = lambda m: m & ~cv2.erode(m.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # noqa: E731
        to_truth = cv2.distanceTransform((~edge(truth)).view(np.uint8), cv2.DIST_L2, 3)
        for name, up in methods.items():
            mask = up(work)
            scores[name].append(((mask ^ truth).sum() / truth.sum(), to_truth[edge(mask)].mean()))
    print(f"\nupscaling 960x540 -> 1920x1080 against the true shapes ({shapes} characters):")
    for name, values in scores.items():
        wrong, distance = np.mean(values, axis=0)
        print(f"  {name:<20} wrong pixels {100 * wrong:5.2f}% of the mask   mean outline distance {distance:.3f} px")


def segmented_share(cache: Path) -> None:
    """Segment a generated 1080p episode (4 s, cached) with the default pipeline (flow
    propagation, pieces refinement) on detections of its true masks, write its manifest,
    and print what share of the shots' time the writing is."""
    episode = ensure_episode(cache, seed=21, duration=4.0, width=SOURCE[1], height=SOURCE[0])
    detections = episode / "detections-960x540.parquet"
    if not detections.is_file():  # file detections must be at the working resolution
        full = episode / "detections-1080p.parquet"
        write_unstable_detections(episode, full, seed=0, config=UnstableConfig(level=0.5))
        table = pq.read_table(full, columns=list(FileDetector.COLUMNS))
        small = [
            encode_mask(
                cv2.resize(decode_mask(c, *SOURCE).astype(np.float32), WORK[::-1], interpolation=cv2.INTER_AREA) >= 0.5
            )[0]
            for c in table.column("mask_rle").to_pylist()
        ]
        table = table.set_column(3, "height", pa.array([WORK[0]] * len(small), pa.int32()))
        table = table.set_column(4, "width", pa.array([WORK[1]] * len(small), pa.int32()))
        pq.write_table(table.set_column(5, "mask_rle", pa.array(small)), detections)
    config = load_config(SegmentConfig(), None, ["detector=file", f"detector.path={detections}"])
    models = build_models(config)
    fingerprint = probe(episode / "episode.mp4").fingerprint
    segment_s = write_s = 0.0
    frames = rows = 0
    with tempfile.TemporaryDirectory() as out:
        for s in load_truth(episode).shots:
            t0 = time.perf_counter()
            seg = segment_shot(episode / "episode.mp4", Shot(s.index, s.start, s.end, 0.0, 0.0), config, models=models)
            t1 = time.perf_counter()
            rows += write_shot(Path(out) / "ep", seg, config, fingerprint).rows
            segment_s, write_s, frames = (
                segment_s + t1 - t0,
                write_s + time.perf_counter() - t1,
                frames + s.end - s.start,
            )
    print(
        f"\nreal shots: a generated {SOURCE[1]}x{SOURCE[0]} episode, {frames} frames, {rows} rows: segment_shot "
        f"{1000 * segment_s / frames:.0f} ms per frame, writing the manifest {1000 * write_s / frames:.1f} ms per frame "
        f"= {100 * write_s / (segment_s + write_s):.1f}% of the shots' time (CPU, {config.propagator} + {config.refiner})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=24.0, help="episode length (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write here and keep it (default: a temporary directory, removed)")
    parser.add_argument("--no-segment", action="store_true", help="skip segmenting a real 1080p episode for comparison")
    args = parser.parse_args()

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="celmask-bench-"))
    episode = root / "bench_episode"
    shutil.rmtree(episode, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    total = round(args.minutes * 60 * FPS)
    synth_s = write_s = 0.0
    summaries, start, rows, drawings = [], 0, 0, 0
    slowest = 0.0
    while start < total:
        frames = min(total - start, int(rng.integers(2 * FPS, 8 * FPS)))
        t0 = time.perf_counter()
        seg = synth_shot(len(summaries), start, frames, rng)
        t1 = time.perf_counter()
        summaries.append(write_shot(episode, seg, SegmentConfig(), "bench"))
        t2 = time.perf_counter()
        synth_s, write_s, slowest = synth_s + t1 - t0, write_s + t2 - t1, max(slowest, (t2 - t1) / frames)
        rows += summaries[-1].rows
        drawings += sum(len(inst) for inst in seg.instances)
        start += frames
        if sys.stderr.isatty():
            print(f"\r  {start}/{total} frames written", end="", file=sys.stderr, flush=True)
    write_episode_table(episode, summaries)
    t0 = time.perf_counter()
    finalize_episode(episode, len(summaries))
    validate_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in shot_files(episode).values())

    t0 = time.perf_counter()
    table = dataset(episode).to_table()
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    yielded = sum(1 for _ in itertools.islice(iter_masks(episode), ITER_MASKS))
    iter_s = time.perf_counter() - t0
    sample = table.column("mask_rle").unique().to_pylist()[:2000]
    t0 = time.perf_counter()
    for counts in sample:
        decode_mask(counts, *SOURCE)
    decode_s = time.perf_counter() - t0
    coco = sample[:300]
    t0 = time.perf_counter()
    for counts in coco:
        mask_util.decode({"size": list(SOURCE), "counts": counts})
    coco_s = time.perf_counter() - t0

    print(
        f"episode: {args.minutes:g} min, {total} frames at {FPS} fps, {len(summaries)} shots, {rows} rows "
        f"({rows / total:.2f} characters per frame), {drawings} distinct masks (drawings x characters); "
        f"masks computed at {WORK[1]}x{WORK[0]}, written at {SOURCE[1]}x{SOURCE[0]}"
    )
    print(
        f"write:    {write_s:6.1f} s  {rows / write_s:8.0f} rows/s  {drawings / write_s:6.0f} masks encoded/s  "
        f"{1000 * write_s / total:.2f} ms per frame (slowest shot {1000 * slowest:.2f})   [synthesising the masks: {synth_s:.1f} s]"
    )
    print(
        f"size:     {size / 2**20:6.1f} MiB  {size / rows:6.0f} bytes per row  {size / drawings:6.0f} bytes per distinct mask"
    )
    print(f"read:     {read_s:6.1f} s  {rows / read_s:8.0f} rows/s (every column, dataset().to_table())")
    print(
        f"masks:    {iter_s:6.1f} s  {yielded / iter_s:8.0f} masks/s from iter_masks over {yielded} rows (held frames decoded once)"
    )
    print(
        f"decode:   {len(sample) / decode_s:8.0f} masks/s celmask decode_mask, {len(coco) / coco_s:.0f} masks/s pycocotools.mask.decode, at 1080p"
    )
    print(f"validate: {validate_s:6.1f} s  (finalize_episode checks every shot file and RLE)")
    upscaling_table()
    if not args.no_segment:
        segmented_share(ROOT / ".cache" / "bench-manifest" / "seed-21-1080p")
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
