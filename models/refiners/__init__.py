"""Refiners: :mod:`.base` is the contract; :mod:`.pieces` (snap to the drawing's flat
colour pieces) and :mod:`.sam` (Segment Anything: prompt and vote)."""
