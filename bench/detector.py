"""The character detector on real drawings nobody here made, weights side by side.

    python bench/detector.py [--weights A.pt B.pt ...] [--imgsz 416] [--conf C]

Default weights: the built-in detector. For each set of weights, on the same images:

- ``../shared/realdata/gt_tomjerry_milkywaif``: the hand-labelled Tom and Jerry frames
  (a western cartoon, outside the training domain): the best instance's IoU with the
  hand-drawn mask (mean over frames), instances per frame, and instances that overlap
  the labelled character by less than 0.1 IoU (a stand-in for false positives: the
  labels cover the main character only);
- ``../shared/realart/frames``: real film and TV keyframes without labels: instances
  per frame (look at them; the numbers alone say only how busy the detector is).

``celmask train`` reports mAP on composites of held-out characters (``metrics.json``);
this looks at whole real frames.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from celmask.models.detectors.yolo import YoloConfig, YoloDetector
from celmask.tasks.core.types import Frame
from celmask.tasks.segment.config import SegmentConfig
from celmask.tasks.segment.model_sets import BUILTIN_DETECTOR

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOMJERRY = SHARED / "realdata" / "gt_tomjerry_milkywaif"
FRAMES = SHARED / "realart" / "frames"


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def labelled(detector: YoloDetector) -> dict[str, float]:
    best, counts, stray = [], [], []
    names = sorted(p.stem for p in (TOMJERRY / "masks").glob("*.png"))
    for i, name in enumerate(names):
        image = _read(TOMJERRY / "images" / f"{name}.jpg")
        truth = cv2.imread(str(TOMJERRY / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
        (inst,) = detector.detect([Frame(i, 0.0, image)])
        ious = [_iou(m, truth) for m in inst.mask]
        best.append(max(ious, default=0.0))
        counts.append(len(ious))
        stray.append(sum(v < 0.1 for v in ious))
    return {
        "frames": len(names),
        "best_iou": statistics.fmean(best),
        "instances": statistics.fmean(counts),
        "stray": statistics.fmean(stray),
        "missed": sum(b < 0.5 for b in best),
    }


def unlabelled(detector: YoloDetector) -> dict[str, float]:
    counts = []
    for i, path in enumerate(sorted(FRAMES.glob("*.*"))):
        (inst,) = detector.detect([Frame(i, 0.0, _read(path))])
        counts.append(len(inst))
    return {"frames": len(counts), "instances": statistics.fmean(counts) if counts else 0.0, "empty": counts.count(0)}


def main() -> None:
    default_conf = SegmentConfig().detector_conf
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", default=[str(BUILTIN_DETECTOR)])
    parser.add_argument("--imgsz", type=int, default=SegmentConfig().detector_imgsz)
    parser.add_argument("--conf", type=float, default=default_conf)
    args = parser.parse_args()
    if not TOMJERRY.is_dir() or not FRAMES.is_dir():
        raise SystemExit(
            f"bench/detector.py: {SHARED} lacks realdata/ or realart/frames/; put ../shared beside the checkout"
        )
    print(f"imgsz {args.imgsz}, conf {args.conf}")
    print(
        f"{'weights':<28} {'T&J best IoU':>12} {'inst/frame':>10} {'stray/frame':>11} {'missed':>6}   "
        f"{'real frames: inst/frame':>23} {'empty':>5} {'s':>5}"
    )
    for weights in args.weights:
        start = time.perf_counter()
        detector = YoloDetector(YoloConfig(weights, imgsz=args.imgsz, conf=args.conf, device="cpu"))
        a, b = labelled(detector), unlabelled(detector)
        print(
            f"{Path(weights).parent.name + '/' + Path(weights).name:<28} {a['best_iou']:>12.3f} {a['instances']:>10.2f} "
            f"{a['stray']:>11.2f} {a['missed']:>3}/{a['frames']:<2}   {b['instances']:>23.2f} {b['empty']:>2}/{b['frames']:<2} "
            f"{time.perf_counter() - start:>5.0f}"
        )


if __name__ == "__main__":
    main()
