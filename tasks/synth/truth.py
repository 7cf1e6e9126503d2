"""Ground truth of a synthetic episode: ``truth.json`` and ``masks.parquet``.

``truth.json`` (indent 1, sorted keys, integers/strings/bools only, so the bytes are
deterministic) holds the shots with their transitions, the flash frames and the
held-frame runs. ``masks.parquet`` holds one row per (frame, visible character):
the character's *visible* mask after occlusion by characters in front of it and
cropping by the frame, as COCO compressed RLE. Reading it back::

    truth = load_truth(out_dir)
    for frame, track_ids, masks in iter_truth_masks(out_dir, 0, 48):
        ...  # masks: (n, H, W) bool, one per track id

Conventions:

- frame ranges are half-open ``[start, end)``; a shot's ``transition`` is the one
  that starts it; for a fade or dissolve, ``[transition_start, transition_end)`` is
  its span and ``start`` is the span's middle frame (frames before it belong to the
  previous shot);
- track ids are per shot, 0.. in order of first appearance (ties: back to front);
  ``character_id`` says which cast member a track is, across shots;
- mask rows of a frame belong to the shot that owns the frame and exist only where
  that shot's picture is on screen: in a dissolve both pictures are, so the owner's
  masks are recorded; in a fade, frames that are black or show the other shot's
  picture get no rows; full white/black flash frames get no rows, "whiten" flashes
  keep their masks; burnt-in subtitles are an overlay and do not cut masks;
- ``holds`` come from comparing the rendered frames exactly (before encoding); runs
  of identical black or white frames count too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import decode_mask

TRUTH_NAME = "truth.json"
MASKS_NAME = "masks.parquet"
VIDEO_NAME = "episode.mp4"
TRUTH_VERSION = 1
"""Bump when the generator's output changes for the same seed and arguments."""
MIN_VISIBLE_PIXELS = 20
"""Instances with fewer visible pixels are not recorded."""

MASKS_SCHEMA = pa.schema(
    [
        pa.field("frame_index", pa.int32(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("character_id", pa.int32(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("bbox", pa.list_(pa.int32(), 4), nullable=False),
        pa.field("mask_rle", pa.string(), nullable=False),
    ]
)
"""Columns of ``masks.parquet``. ``bbox`` is (x, y, w, h) in pixels of the visible mask;
``character_id`` is the cast member (stable across the episode's shots)."""


@dataclass(frozen=True)
class EpisodeTruthTrack:
    """One character's track in one shot (frames where it is visible, >= MIN_VISIBLE_PIXELS)."""

    track_id: int
    character_id: int
    first_frame: int
    last_frame: int
    n_frames: int


@dataclass(frozen=True)
class EpisodeTruthShot:
    index: int
    start: int
    end: int
    transition: str
    """"start" | "cut" | "fade" | "dissolve": how this shot begins."""
    transition_start: int
    transition_end: int
    subtitles: bool
    n_characters: int
    closeup: bool
    kind: str
    """"empty" | "wide" | "full" | "medium" | "closeup"."""
    timing: str
    """"2s" | "3s" | "mixed" | "still": how long drawings are held."""
    camera: str
    """"static" | "pan" | "zoom" | "panzoom", with "+shake" when the camera shakes."""
    camera_on_ones: bool
    set_id: int
    n_drawings: int
    subtitle_spans: tuple[tuple[int, int], ...]
    tracks: tuple[EpisodeTruthTrack, ...]
    edit: str = ""
    """Hard cases only: "cut-in", "cut-out" or "jump" when it goes on from the shot before in the same set."""


@dataclass(frozen=True)
class EpisodeTruthFlash:
    frame: int
    kind: str
    """"white" | "black" (full frame) or "whiten" (strong whitening of the picture)."""


@dataclass(frozen=True)
class Truth:
    seed: int
    width: int
    height: int
    fps: Fraction
    frame_count: int
    shots: tuple[EpisodeTruthShot, ...]
    flashes: tuple[EpisodeTruthFlash, ...]
    holds: tuple[tuple[int, int], ...]
    """Runs ``[start, end)`` of >= 2 consecutive identical frames (as rendered)."""
    version: int = TRUTH_VERSION
    hard_cases: bool = False
    """Generated with the editing that fools shot detectors (celmask.tasks.synth.edits); the
    keys below and ``EpisodeTruthShot.edit`` are in ``truth.json`` only then."""
    occlusions: tuple[tuple[int, int], ...] = ()
    """Frames ``[start, end)`` an object crosses in front of the camera (no shot boundary)."""
    switches: tuple[int, ...] = ()
    """Frames where the background switches behind a close-up (no shot boundary)."""

    def __post_init__(self) -> None:
        pos = 0
        for s in self.shots:
            if s.start != pos or s.end <= s.start:
                raise ValueError(
                    f"shots must tile [0, {self.frame_count}) in order; "
                    f"shot {s.index} is [{s.start}, {s.end}) after {pos}"
                )
            pos = s.end
        if pos != self.frame_count:
            raise ValueError(f"shots end at {pos}, expected frame_count={self.frame_count}")

    @property
    def boundaries(self) -> list[int]:
        """First frame of every shot but the first."""
        return [s.start for s in self.shots[1:]]

    def shot_at(self, frame: int) -> EpisodeTruthShot:
        """The shot that owns ``frame``."""
        for s in self.shots:
            if s.start <= frame < s.end:
                return s
        raise IndexError(f"frame {frame} outside [0, {self.frame_count})")

    def to_json(self) -> str:
        return json.dumps(_truth_dict(self), indent=1, sort_keys=True) + "\n"


def _truth_dict(t: Truth) -> dict[str, Any]:
    return {
        "generator": "celmask.synth",
        "version": t.version,
        "seed": t.seed,
        "width": t.width,
        "height": t.height,
        "fps": f"{t.fps.numerator}/{t.fps.denominator}",
        "frame_count": t.frame_count,
        "shots": [
            {
                "index": s.index,
                "start": s.start,
                "end": s.end,
                "transition": s.transition,
                "transition_start": s.transition_start,
                "transition_end": s.transition_end,
                "subtitles": s.subtitles,
                "n_characters": s.n_characters,
                "closeup": s.closeup,
                "kind": s.kind,
                "timing": s.timing,
                "camera": s.camera,
                "camera_on_ones": s.camera_on_ones,
                "set_id": s.set_id,
                "n_drawings": s.n_drawings,
                "subtitle_spans": [list(x) for x in s.subtitle_spans],
                **({"edit": s.edit} if t.hard_cases else {}),
                "tracks": [
                    {
                        "track_id": r.track_id,
                        "character_id": r.character_id,
                        "first_frame": r.first_frame,
                        "last_frame": r.last_frame,
                        "n_frames": r.n_frames,
                    }
                    for r in s.tracks
                ],
            }
            for s in t.shots
        ],
        "flashes": [{"frame": f.frame, "kind": f.kind} for f in t.flashes],
        "holds": [list(h) for h in t.holds],
        **(
            {"hard_cases": True, "occlusions": [list(o) for o in t.occlusions], "switches": list(t.switches)}
            if t.hard_cases
            else {}
        ),
    }


def truth_from_dict(d: dict[str, Any]) -> Truth:
    """Inverse of :meth:`Truth.to_json` (after ``json.loads``)."""
    num, den = (int(x) for x in str(d["fps"]).split("/"))
    shots = tuple(
        EpisodeTruthShot(
            index=s["index"],
            start=s["start"],
            end=s["end"],
            transition=s["transition"],
            transition_start=s["transition_start"],
            transition_end=s["transition_end"],
            subtitles=s["subtitles"],
            n_characters=s["n_characters"],
            closeup=s["closeup"],
            kind=s["kind"],
            timing=s["timing"],
            camera=s["camera"],
            camera_on_ones=s["camera_on_ones"],
            set_id=s["set_id"],
            n_drawings=s["n_drawings"],
            subtitle_spans=tuple((a, b) for a, b in s["subtitle_spans"]),
            tracks=tuple(EpisodeTruthTrack(**r) for r in s["tracks"]),
            edit=s.get("edit", ""),
        )
        for s in d["shots"]
    )
    return Truth(
        seed=d["seed"],
        width=d["width"],
        height=d["height"],
        fps=Fraction(num, den),
        frame_count=d["frame_count"],
        shots=shots,
        flashes=tuple(EpisodeTruthFlash(f["frame"], f["kind"]) for f in d["flashes"]),
        holds=tuple((a, b) for a, b in d["holds"]),
        version=d["version"],
        hard_cases=d.get("hard_cases", False),
        occlusions=tuple((a, b) for a, b in d.get("occlusions", ())),
        switches=tuple(d.get("switches", ())),
    )


def load_truth(out_dir: str | Path) -> Truth:
    """Read ``truth.json`` of a generated episode (present only once it is complete)."""
    path = Path(out_dir) / TRUTH_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise CelmaskError(
            path,
            "no truth.json: the episode was never generated or is incomplete",
            "run celmask.tasks.synth.generate_episode again",
        ) from e
    return truth_from_dict(json.loads(text))


# --------------------------------------------------------------------------- masks


class MaskWriter:
    """Streams mask rows into ``masks.parquet`` one row group per ``frames_per_group`` frames."""

    def __init__(self, path: Path, frames_per_group: int = 240) -> None:
        self._writer = pq.ParquetWriter(str(path), MASKS_SCHEMA, compression="zstd", use_dictionary=["label"])
        self._frames_per_group = frames_per_group
        self._rows: dict[str, list] = {f.name: [] for f in MASKS_SCHEMA}
        self._group_start: int | None = None

    def add(
        self,
        frame: int,
        shot: int,
        track: int,
        character: int,
        height: int,
        width: int,
        area: int,
        bbox: tuple[int, int, int, int],
        rle: str,
    ) -> None:
        """Add one row; rows must come in (frame, track) order."""
        if self._group_start is None:
            self._group_start = frame
        elif frame - self._group_start >= self._frames_per_group:
            self.flush()
            self._group_start = frame
        r = self._rows
        r["frame_index"].append(frame)
        r["shot_index"].append(shot)
        r["track_id"].append(track)
        r["character_id"].append(character)
        r["label"].append("character")
        r["height"].append(height)
        r["width"].append(width)
        r["area"].append(area)
        r["bbox"].append(list(bbox))
        r["mask_rle"].append(rle)

    def flush(self) -> None:
        if self._rows["frame_index"]:
            self._writer.write_table(pa.Table.from_pydict(self._rows, schema=MASKS_SCHEMA))
            self._rows = {f.name: [] for f in MASKS_SCHEMA}

    def close(self) -> None:
        self.flush()
        self._writer.close()


def iter_truth_masks(
    out_dir: str | Path, start: int = 0, end: int | None = None, *, chunk: int = 48
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(frame_index, track_ids (n,) int32, masks (n, H, W) bool)`` for every frame in
    ``[start, end)`` (``end`` defaults to the episode's frame count), including frames with
    no instances (n = 0). Reads ``chunk`` frames at a time with Parquet filters, so memory
    stays bounded by the chunk, not the episode.
    """
    out_dir = Path(out_dir)
    truth = load_truth(out_dir)
    h, w = truth.height, truth.width
    stop = truth.frame_count if end is None else min(end, truth.frame_count)
    path = str(out_dir / MASKS_NAME)
    for c0 in range(max(0, start), stop, chunk):
        c1 = min(stop, c0 + chunk)
        table = pq.read_table(
            path,
            columns=["frame_index", "track_id", "mask_rle"],
            filters=[("frame_index", ">=", c0), ("frame_index", "<", c1)],
            partitioning=None,  # a "key=value" folder in out_dir must not become a column
        )
        frames = table.column("frame_index").to_numpy()
        tracks = table.column("track_id").to_numpy()
        rles = table.column("mask_rle").to_pylist()
        order = np.lexsort((tracks, frames))
        by_frame: dict[int, list[int]] = {}
        for i in order:
            by_frame.setdefault(int(frames[i]), []).append(int(i))
        for f in range(c0, c1):
            rows = by_frame.get(f, [])
            ids = np.array([tracks[i] for i in rows], dtype=np.int32)
            masks = np.zeros((len(rows), h, w), dtype=bool)
            for j, i in enumerate(rows):
                masks[j] = decode_mask(rles[i], h, w)
            yield f, ids, masks
