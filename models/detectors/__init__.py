"""Detectors: :class:`.yolo.Detector` is the contract; :mod:`.yolo` runs ultralytics
YOLO-seg, :class:`.yolo.FileDetector` replays a manifest."""
