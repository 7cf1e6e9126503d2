"""Import ultralytics offline, with a config directory celmask owns.

ultralytics reads ``YOLO_CONFIG_DIR`` once, at import, and writes its
``settings.json`` there (``~/.config/Ultralytics`` otherwise). On every train and
val call its dataset check runs ``check_font("Arial.ttf")``, which tries a download
when the font is not in that directory: the only network access seen in
train/val/predict (../shared/notes/ultralytics.md). So before the first import::

    from celmask.models.ultralytics_env import ultralytics_offline
    ultralytics_offline()          # env defaults + a local Arial.ttf
    from ultralytics import YOLO   # now safe

Settings already in the environment win (a user's own ``YOLO_CONFIG_DIR`` is kept).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

FONT_NAME = "Arial.ttf"
"""The font ultralytics' dataset check looks for in its config directory."""


def default_config_dir() -> Path:
    """``$XDG_CACHE_HOME/celmask/ultralytics`` (``~/.cache/celmask/ultralytics``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "celmask" / "ultralytics"


def _local_ttf() -> Path | None:
    """A TTF that ships with the environment: matplotlib's DejaVuSans (an ultralytics dependency)."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        font = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    return None


def ultralytics_offline() -> Path:
    """Set ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` (when unset) and put a local font
    where ultralytics looks for ``Arial.ttf``. Returns ultralytics' user config
    directory. Call before importing ultralytics; calling again is cheap."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "ultralytics.utils" in sys.modules:  # imported already: use the directory it settled on
        user_dir = Path(sys.modules["ultralytics.utils"].USER_CONFIG_DIR)
    else:
        if "YOLO_CONFIG_DIR" not in os.environ:
            base = default_config_dir()
            try:
                (base / "Ultralytics").mkdir(parents=True, exist_ok=True)
            except OSError:  # read-only home: a private temporary directory
                base = (
                    Path(tempfile.gettempdir()) / f"celmask-ultralytics-{os.getuid() if hasattr(os, 'getuid') else 0}"
                )
            os.environ["YOLO_CONFIG_DIR"] = str(base)
        user_dir = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    try:
        user_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return user_dir  # ultralytics falls back to a writable directory of its own choosing
    target = user_dir / FONT_NAME
    if not target.exists():
        font = _local_ttf()
        if font is not None:
            tmp = target.with_name(f".{FONT_NAME}.{os.getpid()}")
            shutil.copyfile(font, tmp)
            os.replace(tmp, target)
    return user_dir
