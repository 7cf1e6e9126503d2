"""Propagators: :mod:`.base` is the contract; :mod:`.optical_flow` (DIS optical flow
between the drawings, fused with the detections that agree) and :mod:`.sam2` (SAM 2's
video predictor)."""
