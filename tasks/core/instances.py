"""Character instances of one frame: the container every segmentation stage speaks.

Column-oriented like supervision's ``Detections``: one row per instance, every
field an array whose first axis is the row. Masks and boxes are in the pixels of the
frames they were found on: the shot's working size inside the pipeline (the manifest
writer scales them to the source resolution), so no stage has to guess the
coordinate space. Indexing returns the same type, so filters read naturally::

    inst = Instances.from_masks(masks, score=np.array([0.9, 0.3]))
    confident = inst[inst.score >= 0.5]

The class validates in ``__post_init__`` and does nothing else there (Prefect may
rebuild dataclasses); it never changes the arrays it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

NO_TRACK = -1
"""``track_id`` of an instance not yet associated with a track."""


@dataclass(frozen=True, eq=False)
class Instances:
    """Instances of one frame of size (height, width)."""

    mask: np.ndarray
    """(n, H, W) bool: each instance's visible pixels, at the frames' resolution."""
    xyxy: np.ndarray
    """(n, 4) float32: box (x0, y0, x1, y1) in the frames' pixels, x1/y1 exclusive."""
    score: np.ndarray
    """(n,) float32 confidence, 0-1."""
    class_id: np.ndarray
    """(n,) int32 label index (0: character)."""
    track_id: np.ndarray
    """(n,) int32 per-shot track id, or NO_TRACK."""
    data: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-row extras, each (n, ...): e.g. "source", "keyframe_distance"."""

    def __post_init__(self) -> None:
        if self.mask.ndim != 3 or self.mask.dtype != np.bool_:
            raise ValueError(
                f"mask must be a (n, H, W) bool array, but got shape {self.mask.shape} dtype {self.mask.dtype}"
            )
        n = self.mask.shape[0]
        for name, shape, kind in (
            ("xyxy", (n, 4), np.floating),
            ("score", (n,), np.floating),
            ("class_id", (n,), np.integer),
            ("track_id", (n,), np.integer),
        ):
            value = getattr(self, name)
            if value.shape != shape or not np.issubdtype(value.dtype, kind):
                raise ValueError(
                    f"{name} must have shape {shape} and a {kind.__name__} dtype, but got shape {value.shape} dtype {value.dtype}"
                )
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] must have {n} rows, but got {len(value)}")

    # -- construction ----------------------------------------------------------------
    @classmethod
    def empty(cls, height: int, width: int) -> Instances:
        """No instances in a frame of this size."""
        return cls.from_masks(np.zeros((0, height, width), dtype=bool), score=np.zeros(0, np.float32))

    @classmethod
    def from_masks(
        cls,
        mask: np.ndarray,
        *,
        score: np.ndarray,
        class_id: np.ndarray | None = None,
        track_id: np.ndarray | None = None,
        data: dict[str, np.ndarray] | None = None,
    ) -> Instances:
        """Instances whose boxes are the tight boxes of their masks."""
        mask = np.asarray(mask, dtype=bool)
        n = mask.shape[0] if mask.ndim == 3 else 0  # a wrong shape is reported by __post_init__
        return cls(
            mask=mask,
            xyxy=mask_boxes(mask) if mask.ndim == 3 else np.zeros((0, 4), np.float32),
            score=np.asarray(score, dtype=np.float32),
            class_id=np.zeros(n, np.int32) if class_id is None else np.asarray(class_id, dtype=np.int32),
            track_id=np.full(n, NO_TRACK, np.int32) if track_id is None else np.asarray(track_id, dtype=np.int32),
            data=dict(data or {}),
        )

    @classmethod
    def concat(cls, parts: Sequence[Instances]) -> Instances:
        """The rows of several Instances of the same frame size, in order."""
        if not parts:
            raise ValueError("concat needs at least one Instances (use Instances.empty for none)")
        sizes = {p.size for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"concat needs one frame size, but got {sorted(sizes)}")
        keys = {frozenset(p.data) for p in parts}
        if len(keys) != 1:
            raise ValueError("concat needs the same data keys in every part (all or none of each)")
        return cls(
            mask=np.concatenate([p.mask for p in parts]),
            xyxy=np.concatenate([p.xyxy for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            track_id=np.concatenate([p.track_id for p in parts]),
            data={k: np.concatenate([p.data[k] for p in parts]) for k in parts[0].data},
        )

    # -- access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.mask.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Instances:
        """Rows by int, slice, bool mask or index array; always an Instances."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if index != -1 else None)
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == np.bool_ and index.shape != (len(self),):
                raise IndexError(f"a bool index must have shape ({len(self)},), but got {index.shape}")
        return Instances(
            mask=self.mask[index],
            xyxy=self.xyxy[index],
            score=self.score[index],
            class_id=self.class_id[index],
            track_id=self.track_id[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frame."""
        return self.mask.shape[1], self.mask.shape[2]

    @property
    def area(self) -> np.ndarray:
        """(n,) int64 mask pixel counts."""
        return self.mask.sum(axis=(1, 2), dtype=np.int64)


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """(n, 4) float32 tight boxes (x0, y0, x1, y1), exclusive ends, of (n, H, W) bool
    masks; an empty mask gets an all-zero box."""
    n = mask.shape[0]
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows = mask.any(axis=2)
    cols = mask.any(axis=1)
    present = rows.any(axis=1)
    boxes[present, 0] = cols[present].argmax(axis=1)
    boxes[present, 1] = rows[present].argmax(axis=1)
    boxes[present, 2] = mask.shape[2] - cols[present][:, ::-1].argmax(axis=1)
    boxes[present, 3] = mask.shape[1] - rows[present][:, ::-1].argmax(axis=1)
    return boxes
