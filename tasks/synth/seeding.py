"""Named random streams derived from one episode seed.

Every part of the generator draws from its own child generator, keyed by a stream
name and indices, so that changing how many numbers one part draws (say, a new hair
style) does not reshuffle the timeline of every other part. No global random state
is used anywhere in :mod:`celmask.tasks.synth`.

Example::

    rng = child_rng(seed, "cast", 3)   # the 4th character design of the episode
"""

from __future__ import annotations

import zlib

import numpy as np


def _stream_key(name: str) -> int:
    """A stable 32-bit number for a stream name (``hash()`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def child_rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """The generator for ``stream`` (and optional integer ``index`` path) of ``seed``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    entropy = [int(seed), _stream_key(stream), *(int(i) for i in index)]
    return np.random.default_rng(np.random.SeedSequence(entropy))
