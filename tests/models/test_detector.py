"""Detector backends: ultralytics YOLO-seg (tiny, random weights built here) and
detections read from a Parquet file (the generator's own ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from celmask.models.detectors.yolo import FileDetector, YoloConfig, YoloDetector
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.synth import generate_episode, iter_truth_masks
from celmask.tasks.video import Frame, iter_frames


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "ep"
    generate_episode(out, seed=11, duration=3.0)
    return out


def frames_of(episode, n: int = 6) -> list[Frame]:
    return list(iter_frames(episode / "episode.mp4", end=n))


def test_yolo_random_weights_give_instances_at_frame_size(episode, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    detector = YoloDetector(YoloConfig(weights="yolov8n-seg.yaml", imgsz=64, conf=0.0, batch=4, device="cpu"))
    frames = frames_of(episode)
    out = detector.detect(frames)
    assert len(out) == len(frames)
    for inst in out:
        assert inst.size == (360, 640)
        assert inst.mask.dtype == bool and len(inst.score) == len(inst)
    assert detector.model_id.startswith("yolo:yolov8n-seg.yaml@")


def test_yolo_rejects_detection_only_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    from celmask.models.ultralytics_env import ultralytics_offline

    ultralytics_offline()
    from ultralytics import YOLO

    path = tmp_path / "detect-only.pt"
    YOLO("yolov8n.yaml").save(str(path))
    with pytest.raises(CelmaskError, match="detect model, not a segmentation model"):
        YoloDetector(YoloConfig(weights=str(path), device="cpu"))


@pytest.mark.parametrize("name", ["missing.pt"])
def test_yolo_missing_weights_is_one_line(tmp_path, name):
    with pytest.raises(CelmaskError) as error:
        YoloDetector(YoloConfig(weights=str(tmp_path / name), device="cpu"))
    assert "not found" in str(error.value) and "\n" not in str(error.value)


def test_file_detector_reads_the_truth_back(episode, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    truth_table = pq.read_table(episode / "masks.parquet")
    detections = tmp_path / "detections.parquet"  # the truth as another segmenter's output
    pq.write_table(truth_table.append_column("score", pa.array(np.ones(len(truth_table), np.float32))), detections)
    frames = frames_of(episode, 24)
    detector = FileDetector(detections)
    out = detector.detect(frames)
    truth = {f: masks for f, _, masks in iter_truth_masks(episode, 0, 24)}
    assert len(out) == 24
    assert sum(len(i) for i in out) > 0
    for frame, inst in zip(frames, out):
        expected = truth[frame.index]
        assert len(inst) == len(expected)
        got = sorted(inst.mask.reshape(len(inst), -1).sum(1).tolist())
        assert got == sorted(expected.reshape(len(expected), -1).sum(1).tolist())
        assert np.all(inst.score == 1.0) if len(inst) else True


def test_file_detector_bad_files(tmp_path, episode):
    with pytest.raises(CelmaskError, match="not found"):
        FileDetector(tmp_path / "none.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(CelmaskError, match="not a Parquet file"):
        FileDetector(junk)
    import pyarrow as pa
    import pyarrow.parquet as pq

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"frame_index": [0]}), other)
    with pytest.raises(CelmaskError, match="lacks the columns"):
        FileDetector(other)


class _SmallGpu(YoloDetector):
    """A detector whose device holds at most ``fits`` frames: CUDA out-of-memory cannot
    be produced on a CPU-only machine, so the fault is raised where torch would raise it."""

    fits = 2

    def _predict(self, frames):
        import torch

        if len(frames) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._predict(frames)


def test_out_of_memory_halves_the_batch_then_reports(episode, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    detector = _SmallGpu(YoloConfig(weights="yolov8n-seg.yaml", imgsz=64, batch=8, device="cpu"))
    frames = frames_of(episode, 6)
    assert len(detector.detect(frames)) == 6 and detector._batch == 2
    detector.fits = 0
    with pytest.raises(CelmaskError, match="out of memory even one frame at a time"):
        detector.detect(frames)
