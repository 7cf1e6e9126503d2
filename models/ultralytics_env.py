"""Import ultralytics offline and in safe-load mode, with a config directory celmask owns.

ultralytics reads ``YOLO_CONFIG_DIR`` once, at import, and writes its
``settings.json`` there (``~/.config/Ultralytics`` otherwise). On every train and
val call its dataset check runs ``check_font("Arial.ttf")``, which tries a download
when the font is not in that directory: the only network access seen in
train/val/predict (../shared/notes/ultralytics.md). So before the first import::

    from celmask.models.ultralytics_env import ultralytics_offline
    ultralytics_offline()          # env defaults + a local Arial.ttf
    from ultralytics import YOLO   # now safe

Settings already in the environment win (a user's own ``YOLO_CONFIG_DIR`` is kept),
except safe loading, which is always on. A ``.pt`` file is a pickle, and ultralytics
unpickles it with ``weights_only=False`` by default, so a crafted file runs code as
it loads; whoever chooses ``detector.weights`` (in a deployment, anyone who can start
a flow run) would choose that code. ``ULTRALYTICS_SAFE_LOAD=1`` makes ultralytics 8.4
load with ``weights_only=True`` and an allow-list of its own and torch's model classes
(``ultralytics.nn.tasks._SafeLoad``), and build models from their YAML without
``eval``: real checkpoints, celmask's detector included, load as before; anything else
is refused before any of it runs. ultralytics reads the flag once, at import, so when
it was imported first the flag is set on the modules that read it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from celmask.tasks.core.errors import CelmaskError

FONT_NAME = "Arial.ttf"
"""The font ultralytics' dataset check looks for in its config directory."""
SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"
UNSAFE_FILE = (
    "holds objects other than a model's layers and weights (code that would run as it loads), so it is not loaded"
)
"""The problem reported for a weights file that safe loading refused."""


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


def _safe_load_everywhere() -> None:
    """Safe loading on, and known to be: an ultralytics imported before the flag was
    set gets it on the modules that read it at import; one without it is refused."""
    os.environ[SAFE_LOAD_ENV] = "1"
    if "ultralytics" not in sys.modules:
        # Its logger writes to the sys.stdout of its import (its first-run settings
        # banner among others): make that stderr, so stdout stays the command's (--json).
        with contextlib.redirect_stdout(sys.stderr):
            import ultralytics
    import ultralytics
    import ultralytics.utils

    if not hasattr(ultralytics.utils, "SAFE_LOAD"):
        raise CelmaskError(
            "ultralytics",
            f"{ultralytics.__version__} cannot load weights safely (no {SAFE_LOAD_ENV})",
            "install the ultralytics version pyproject.toml names (./dev.sh setup)",
        )
    for name in ("ultralytics.utils", "ultralytics.nn.tasks"):
        module = sys.modules.get(name)
        if module is not None:
            module.SAFE_LOAD = True


def ultralytics_offline() -> Path:
    """Set ``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` (when unset), put a local font
    where ultralytics looks for ``Arial.ttf``, then import ultralytics with safe loading
    on. Returns ultralytics' user config directory. Call before using ultralytics;
    calling again is cheap."""
    user_dir = _user_config_dir()
    _safe_load_everywhere()
    return user_dir


def _user_config_dir() -> Path:
    """``YOLO_OFFLINE=1`` and ultralytics' config directory (``YOLO_CONFIG_DIR``, chosen
    when unset) with a local font in it, before ultralytics reads them at import."""
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
