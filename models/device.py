"""Which torch device a model runs on when the settings say ``auto``: one answer for
the detector, the propagators, the refiners and a shot's run record."""

from __future__ import annotations


def auto_device() -> str:
    """cuda if present, else Apple's mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
