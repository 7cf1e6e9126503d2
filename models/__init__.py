"""The model adapters, one subpackage per family, and detector training.

- :mod:`~celmask.models.detectors`: per-frame instance masks (ultralytics YOLO-seg; a manifest file);
- :mod:`~celmask.models.propagators`: carrying a keyframe's mask through a shot (optical flow; SAM 2);
- :mod:`~celmask.models.refiners`: snapping masks to drawn pieces; Segment Anything;
- :mod:`~celmask.models.transnetv2`: TransNetV2, the learned shot-boundary network, with its packaged weights;
- :mod:`~celmask.models.weights`: where weights come from, checked;
- :mod:`~celmask.models.training`: training and judging the detector with ultralytics, offline.

Adapters import only :mod:`celmask.tasks.core`.
"""
