"""Deliberately unstable per-frame detections made from a generated episode's truth.

A still-image segmenter run frame by frame misses characters (small or partly
hidden ones most), grows and shrinks masks, loses limbs, frays edges, finds
characters in the background, and is confident about the wrong frames. The
keyframe, propagation and refinement stages exist to repair exactly that, so the
segmentation benchmark feeds them these detections (through
:class:`celmask.models.detectors.yolo.FileDetector`) and measures how much they repair, without
a trained detector.

Like a real detector it is deterministic in the picture: every frame of a held run
(the same drawing repeated) gets the detections of the run's first frame. Different
drawings get independent perturbations, the best case for propagation and voting;
``persistence`` makes the errors last several drawings, as a real detector's do (a
miss or a bad mask over a stretch of drawings, a false find that stays). Everything
is deterministic in ``seed``.

    path = write_unstable_detections(episode_dir, out / "unstable.parquet", seed=3)
    summary = read_unstable_summary(path)     # how hard the input is

Output columns: ``frame_index, label ("character"), score, height, width, mask_rle``
(what FileDetector reads), plus ``true_track_id`` (the truth track a detection was
made from, -1 for a false positive) and ``quality`` (its IoU with that truth; for a
false positive, its largest IoU with any), so a benchmark can check which frames a
keyframe scorer picked. The summary sits in the file's Parquet metadata, so a
cached file still says how hard it is.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.rle import encode_mask
from celmask.tasks.eval.masks import region_j
from celmask.tasks.synth.seeding import child_rng
from celmask.tasks.synth.truth import MASKS_NAME, MIN_VISIBLE_PIXELS, iter_truth_masks, load_truth

SUMMARY_KEY = b"celmask.unstable"
"""Parquet metadata key of the JSON ``{"seed", "config", "summary"}``."""
REFERENCE_LINES = 360
"""Pixel sizes in :class:`UnstableConfig` are for frames this tall and scale with the height."""

SCHEMA = pa.schema(
    [
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask_rle", pa.string(), nullable=False),
        pa.field("true_track_id", pa.int32(), nullable=False),
        pa.field("quality", pa.float32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class UnstableConfig:
    """How unstable. Chances are per true instance and drawing; ``level`` scales every
    chance (capped at 0.95) and every size, so 0 copies the truth (scores still vary)
    and 2 is about twice as bad."""

    level: float = 1.0
    miss: float = 0.03
    """Base chance that a character is not detected."""
    miss_small: float = 0.3
    """Extra miss chance for a tiny mask, falling linearly to 0 at ``small_area``."""
    small_area: float = 0.005
    """Share of the frame from which a mask no longer counts as small."""
    miss_partial: float = 0.25
    """Extra miss chance times the share of the character hidden (by others or the
    frame edge), measured against its largest visible area in the shot."""
    morph: float = 0.6
    """Chance of eroding or dilating (even odds) the mask."""
    morph_px: float = 2.0
    """Largest erosion / dilation radius, pixels; the radius is uniform in [1, morph_px]."""
    jitter: float = 0.5
    """Chance of noisy edges."""
    jitter_px: float = 1.0
    """Standard deviation of the edge displacement, pixels."""
    jitter_scale_px: float = 2.0
    """Length scale along the edge over which the displacement varies, pixels."""
    chop: float = 0.15
    """Chance of removing a piece: a half-plane or a limb-sized disc at the mask's rim (even odds)."""
    chop_share: float = 0.3
    """Largest share of the mask a piece takes (uniform from a third of it)."""
    false_positives: float = 0.15
    """Expected false detections per drawing (Poisson)."""
    background_share: float = 0.3
    """Share of false detections that are a large background region, not a small blob."""
    persistence: int = 1
    """Drawings an error lasts: each character's miss or perturbation and the false
    finds are drawn anew every ``persistence`` drawings (1: independently per drawing)."""
    score_base: float = 0.35
    score_weight: float = 0.5
    score_noise: float = 0.12
    """score = clip(score_base + score_weight * quality + N(0, score_noise), 0.01, 0.99):
    loosely tied to quality, so the most confident frame is often not the best mask."""

    def __post_init__(self) -> None:
        chances = ("miss", "miss_small", "miss_partial", "morph", "jitter", "chop", "background_share")
        for name in chances:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"unstable {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("level", "small_area", "morph_px", "jitter_px", "chop_share", "false_positives", "score_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"unstable {name} must be >= 0, got {getattr(self, name)}")
        if self.persistence < 1:
            raise ValueError(f"unstable persistence must be >= 1, got {self.persistence}")
        if self.jitter_scale_px <= 0:
            raise ValueError(f"unstable jitter_scale_px must be > 0, got {self.jitter_scale_px}")

    def chance(self, base: float) -> float:
        return min(0.95, base * self.level)


@dataclass(frozen=True)
class UnstableSummary:
    frames: int
    true_instances: int
    """(frame, character) pairs in the truth."""
    missed: int
    detections: int
    """Detections made from a true instance (true_instances - missed)."""
    false_positives: int
    mean_iou: float
    """Mean IoU of the detections with their truth (NaN without any)."""
    score_quality_corr: float
    """Pearson correlation of score and quality over all detections (NaN when undefined)."""

    @property
    def miss_rate(self) -> float:
        return self.missed / self.true_instances if self.true_instances else 0.0


class _Row(NamedTuple):
    true_track_id: int
    score: float
    quality: float
    rle: str


def write_unstable_detections(
    episode_dir: str | Path, out_path: str | Path, *, seed: int, config: UnstableConfig = UnstableConfig()
) -> Path:
    """Write unstable detections of the episode in ``episode_dir`` to ``out_path``
    (atomically); same arguments, same bytes. The summary: :func:`read_unstable_summary`."""
    episode_dir, out_path = Path(episode_dir), Path(out_path)
    truth = load_truth(episode_dir)
    h, w = truth.height, truth.width
    drawing = {f: start for start, end in truth.holds for f in range(start, end)}
    visible = _visible_shares(episode_dir)
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    counts = {"frames": 0, "true_instances": 0, "missed": 0}
    key, ordinal, rows = -1, -1, []
    for frame, ids, masks in iter_truth_masks(episode_dir):
        if drawing.get(frame, frame) != key:  # a new drawing; a held one repeats its detections
            key, ordinal = drawing.get(frame, frame), ordinal + 1
            errors = key if config.persistence == 1 else ordinal // config.persistence  # whose random draws
            rows = _detect_drawing(masks, [visible[frame, int(t)] for t in ids], ids, seed, errors, config)
        counts["frames"] += 1
        counts["true_instances"] += len(ids)
        counts["missed"] += len(ids) - sum(r.true_track_id >= 0 for r in rows)
        for r in rows:
            values = (frame, "character", r.score, h, w, r.rle, r.true_track_id, r.quality)
            for name, value in zip(SCHEMA.names, values):
                columns[name].append(value)
    summary = _summary(counts, columns)
    meta = {"seed": seed, "config": asdict(config), "summary": asdict(summary)}
    schema = SCHEMA.with_metadata({SUMMARY_KEY: json.dumps(meta, sort_keys=True)})
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), buffer, compression="zstd", row_group_size=4096)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, buffer.getvalue())
    return out_path


def read_unstable_summary(path: str | Path) -> UnstableSummary:
    """The summary :func:`write_unstable_detections` stored in ``path``."""
    meta = pq.read_schema(path).metadata or {}
    if SUMMARY_KEY not in meta:
        raise ValueError(f"{path}: not a file of unstable detections (no {SUMMARY_KEY.decode()} metadata)")
    return UnstableSummary(**json.loads(meta[SUMMARY_KEY])["summary"])


def _summary(counts: dict[str, int], columns: dict[str, list]) -> UnstableSummary:
    track = np.array(columns["true_track_id"], np.int64)
    quality = np.array(columns["quality"], np.float64)
    score = np.array(columns["score"], np.float64)
    real = track >= 0
    varied = len(score) > 1 and score.std() > 0 and quality.std() > 0
    return UnstableSummary(
        frames=counts["frames"],
        true_instances=counts["true_instances"],
        missed=counts["missed"],
        detections=int(real.sum()),
        false_positives=int((~real).sum()),
        mean_iou=float(quality[real].mean()) if real.any() else math.nan,
        score_quality_corr=float(np.corrcoef(score, quality)[0, 1]) if varied else math.nan,
    )


def _visible_shares(episode_dir: Path) -> dict[tuple[int, int], float]:
    """(frame, track) -> visible area / the track's largest visible area in its shot,
    from the truth's area column (no masks decoded)."""
    names = ("frame_index", "shot_index", "track_id", "area")
    table = pq.read_table(episode_dir / MASKS_NAME, columns=list(names), partitioning=None)
    frame, shot, track, area = (table.column(c).to_numpy().astype(np.int64) for c in names)
    _, group = np.unique(np.stack([shot, track], axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    largest = np.zeros(group.max() + 1 if len(group) else 0, np.int64)
    np.maximum.at(largest, group, area)
    share = area / largest[group]
    return {(int(f), int(k)): float(s) for f, k, s in zip(frame, track, share)}


def _detect_drawing(
    masks: np.ndarray, visible: list[float], ids: np.ndarray, seed: int, key: int, config: UnstableConfig
) -> list[_Row]:
    """Detections of one drawing: each true instance perturbed from its own random
    stream, then the false positives; ``key`` picks the streams (drawings with the same
    key make the same random draws, so the same errors)."""
    h, w = masks.shape[1:]
    scale = h / REFERENCE_LINES
    rows = []
    for mask, track, share in zip(masks, ids, visible):
        rng = child_rng(seed, "unstable", key, int(track))
        small = max(0.0, 1.0 - mask.sum() / (config.small_area * h * w)) if config.small_area else 0.0
        p_miss = config.chance(config.miss + config.miss_small * small + config.miss_partial * (1.0 - share))
        if rng.random() < p_miss:
            continue
        detected = _perturb(mask, rng, config, scale)
        if detected.sum() >= MIN_VISIBLE_PIXELS:
            rows.append(_row(detected, int(track), region_j(detected, mask), rng, config))
    rng = child_rng(seed, "unstable-fp", key)
    for _ in range(rng.poisson(config.false_positives * config.level)):
        blob = _false_positive(rng, h, w, config)
        if blob.sum() >= MIN_VISIBLE_PIXELS:
            quality = max((region_j(blob, m) for m in masks), default=0.0)
            rows.append(_row(blob, -1, quality, rng, config))
    return rows


def _row(mask: np.ndarray, track: int, quality: float, rng: np.random.Generator, config: UnstableConfig) -> _Row:
    noise = rng.normal(0.0, config.score_noise) if config.score_noise else 0.0
    score = float(np.clip(config.score_base + config.score_weight * quality + noise, 0.01, 0.99))
    return _Row(track, score, float(quality), encode_mask(mask)[0])


def _perturb(mask: np.ndarray, rng: np.random.Generator, config: UnstableConfig, scale: float) -> np.ndarray:
    """``mask`` eroded or dilated, with noisy edges, and chopped, each by chance.

    Erosion, dilation and edge noise are one operation: thresholding the signed
    distance to the edge plus an offset and a smooth noise field (in pixels). It runs
    on a window around the mask, padded by replication where the window meets the
    frame edge, so a mask cut by the frame stays cut there and does not shrink away."""
    offset = 0.0
    if rng.random() < config.chance(config.morph):
        offset = rng.choice((-1.0, 1.0)) * rng.uniform(1.0, max(1.0, config.morph_px * config.level * scale))
    amplitude = config.jitter_px * config.level * scale if rng.random() < config.chance(config.jitter) else 0.0
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    margin = math.ceil(abs(offset) + 3 * amplitude) + 2
    height, width = mask.shape
    y0, y1, x0, x1 = max(0, y - margin), min(height, y + bh + margin), max(0, x - margin), min(width, x + bw + margin)
    top, left = margin - (y - y0), margin - (x - x0)
    crop = cv2.copyMakeBorder(
        mask[y0:y1, x0:x1].view(np.uint8),
        top,
        margin - (y1 - y - bh),
        left,
        margin - (x1 - x - bw),
        cv2.BORDER_REPLICATE,
    )
    inside = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - crop, cv2.DIST_L2, 3)
    signed = np.where(crop > 0, inside - 0.5, 0.5 - outside) + offset  # > 0 inside the new edge
    if amplitude:
        noise = rng.standard_normal(crop.shape).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), config.jitter_scale_px * scale)
        signed += amplitude * noise / max(float(noise.std()), 1e-6)
    out = (signed > 0)[top : top + y1 - y0, left : left + x1 - x0]
    if rng.random() < config.chance(config.chop):
        _chop(out, rng, min(0.9, config.chop_share * config.level * rng.uniform(1 / 3, 1.0)))
    full = np.zeros_like(mask)
    full[y0:y1, x0:x1] = out
    return full


def _chop(mask: np.ndarray, rng: np.random.Generator, share: float) -> None:
    """Remove about ``share`` of ``mask`` (in place): a half-plane from a random side,
    or a disc around a random point of its outer rim (where limbs are)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0 or share <= 0:
        return
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, 2 * math.pi)
        along = xs * math.cos(angle) + ys * math.sin(angle)
        cut = along > np.quantile(along, 1.0 - share)
        mask[ys[cut], xs[cut]] = False
    else:
        reach = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
        rim = np.flatnonzero(reach >= np.quantile(reach, 0.8))
        i = rim[rng.integers(len(rim))]
        radius = max(1, round(math.sqrt(share * len(ys) / math.pi)))
        disc = np.zeros(mask.shape, np.uint8)
        cv2.circle(disc, (int(xs[i]), int(ys[i])), radius, 1, -1)
        mask[disc > 0] = False


def _false_positive(rng: np.random.Generator, h: int, w: int, config: UnstableConfig) -> np.ndarray:
    """A false detection: a large irregular background region (a piece of the set), or
    a small blob of one to three ellipses (a prop, a pattern)."""
    canvas = np.zeros((h, w), np.uint8)
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    if rng.random() < config.background_share:
        angles = np.sort(rng.uniform(0, 2 * math.pi, 7))
        radii = rng.uniform(0.15, 0.35) * np.array([w, h]) * rng.uniform(0.6, 1.0, (7, 1))
        points = centre + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    else:
        for _ in range(rng.integers(1, 4)):
            at = centre + rng.normal(0, 0.04 * h, 2)
            axes = (max(1, round(rng.uniform(0.03, 0.1) * h)), max(1, round(rng.uniform(0.03, 0.1) * h)))
            cv2.ellipse(canvas, (round(at[0]), round(at[1])), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return canvas > 0
