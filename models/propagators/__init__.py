"""Propagators: :mod:`.base` is the contract; :mod:`.optical_flow` (Farneback optical
flow on the drawings) and :mod:`.sam2` (SAM 2's video predictor)."""
