"""Hand corrections of an episode's masks, kept as data beside its manifest.

A person's correction outlives the run that prompted it: each is one small JSON file
under ``_corrections/shot_NNNN/`` (:mod:`celmask.tasks.manifest.layout`), the mask as
COCO RLE at the video's size with who made it and when, so every re-run of the shot
applies it again (:mod:`celmask.tasks.run.correct`). The shot file records which
corrections it holds in its ``celmask.corrections`` metadata (their hash, and those
that no longer fit the shot): that is the part of the shot's cache key that corrections
add, and a file without the key holds none (uncorrected shots keep their bytes).

Tracks a person adds are numbered from :data:`NEW_TRACK_BASE`, so that a re-run that
finds more tracks of its own never renumbers them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.core.rle import decode_mask
from celmask.tasks.manifest.layout import CORRECTIONS_DIR, correction_path, corrections_dir

NEW_TRACK_BASE = 1000
"""First track id of the tracks added by hand."""
META_KEY = "celmask.corrections"
"""Shot-file metadata: JSON ``{"hash", "applied", "stale": [{"file", "why"}]}``."""
KINDS = ("mask", "delete")


@dataclass(frozen=True)
class Correction:
    """One hand correction of one track of one shot."""

    kind: str
    """"mask": the track's mask on ``frame`` is ``mask_rle``; "delete": the track is no character."""
    shot: int
    track: int
    frame: int | None = None
    height: int = 0
    width: int = 0
    mask_rle: str = ""
    """COCO compressed RLE of the (height, width) mask, the video's frame size."""
    new_track: bool = False
    """The track was added by hand (the detector missed the character)."""
    who: str = ""
    when: str = ""
    """UTC, ISO 8601."""
    note: str = ""
    """Where the mask came from (file, format) and whether it was scaled to the video's size."""

    @property
    def file(self) -> str:
        return correction_path("", self.shot, self.track, self.frame if self.kind == "mask" else None).name

    def mask(self) -> np.ndarray:
        return decode_mask(self.mask_rle, self.height, self.width)

    def content(self) -> dict[str, Any]:
        """What decides the corrected masks: everything but who, when and the note."""
        return {k: v for k, v in asdict(self).items() if k not in ("who", "when", "note")}


def save_correction(episode_dir: str | Path, correction: Correction) -> Path:
    """Write ``correction`` (replacing an earlier one of the same track and frame)."""
    path = corrections_dir(episode_dir, correction.shot) / correction.file
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(asdict(correction), indent=1, sort_keys=True) + "\n").encode())
    return path


def load_corrections(episode_dir: str | Path, shot: int) -> list[Correction]:
    """The corrections of ``shot``, in file-name order (by track, then frame)."""
    out = []
    for path in sorted(corrections_dir(episode_dir, shot).glob("track_*.json")):
        try:
            correction = Correction(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise CelmaskError(path, f"not a readable correction ({error})", "delete it and correct again") from None
        if correction.kind not in KINDS or correction.shot != shot or correction.file != path.name:
            raise CelmaskError(path, "does not describe a correction of this shot", "delete it and correct again")
        out.append(correction)
    return out


def corrected_shots(episode_dir: str | Path) -> list[int]:
    """Indices of the shots that have corrections."""
    root = Path(episode_dir) / CORRECTIONS_DIR
    return sorted(int(p.name[5:]) for p in root.glob("shot_*") if p.name[5:].isdigit() and any(p.glob("track_*.json")))


def corrections_hash(corrections: list[Correction]) -> str:
    """What the shot's cache key adds for ``corrections`` ("" for none)."""
    if not corrections:
        return ""
    text = json.dumps([c.content() for c in corrections], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def applied(path: str | Path) -> dict[str, Any]:
    """The ``celmask.corrections`` record of a shot file (``{}`` when it holds none)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(META_KEY.encode())
    return json.loads(raw) if raw else {}
