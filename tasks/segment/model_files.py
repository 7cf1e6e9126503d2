"""Model files only from the directories a worker allows.

Anyone who can start a deployed flow run chooses its ``config``, and with it which
files the models load. A worker started with ``CELMASK_MODEL_DIRS`` (directories,
separated by ``:``) refuses, before any work, a run whose settings name a model file
elsewhere; bare file names are looked up in the weights directories, which the
operator configures, and stay allowed. Without the variable any path is taken, as on a
workstation.
"""

from __future__ import annotations

import os
from pathlib import Path

from celmask.models.weights import split_pin
from celmask.tasks.core.errors import CelmaskError

MODEL_DIRS_ENV = "CELMASK_MODEL_DIRS"
FILE_SETTINGS = ("detector_weights", "detector_path", "propagator_weights", "refiner_checkpoint")
"""SegmentConfig fields that name a file to load."""


def allowed_dirs() -> list[Path]:
    return [Path(os.path.realpath(d)) for d in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if d.strip()]


def check_model_files(config) -> None:
    """A one-line error when ``config`` (a SegmentConfig) names a model file outside
    :data:`MODEL_DIRS_ENV`'s directories (when that is set)."""
    dirs = allowed_dirs()
    if not dirs:
        return
    for name in FILE_SETTINGS:
        value = getattr(config, name)
        if value is None or value == "builtin":
            continue
        path = Path(split_pin(value)[0]).expanduser()
        if path.name == str(path) and not path.is_file():
            continue  # a bare name, found in the configured weights directories
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(d) for d in dirs):
            key = name.replace("_", ".", 1)
            raise CelmaskError(
                f"config {key}",
                f"{value} is outside the model directories this worker allows ({MODEL_DIRS_ENV}={os.environ[MODEL_DIRS_ENV]})",
                "put the file in one of them and name it there, or ask the operator",
            )
