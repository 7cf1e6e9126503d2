"""Scoring against ground truth: :mod:`.masks` (DAVIS J&F), :mod:`.shots` (shot F1),
:mod:`.segment` (a manifest against a generated episode's truth)."""
