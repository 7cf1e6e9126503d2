"""A minor finding of issue 13: the weights digest cache was keyed on (path, size,
mtime), so a same-size file put in place with the old mtime kept the old digest, and a
manifest would name weights it was not made with."""

from __future__ import annotations

import hashlib
import os

import pytest

from celmask.models.weights import cached_sha256

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("how", ["renamed over", "written in place"])
def test_a_same_size_replacement_with_the_old_mtime_is_hashed_again(tmp_path, how):
    cache, path = tmp_path / "cache", tmp_path / "w.pt"
    path.write_bytes(b"A" * 4096)
    assert cached_sha256(path, cache_dir=cache) == hashlib.sha256(b"A" * 4096).hexdigest()
    before = path.stat()
    if how == "renamed over":
        (tmp_path / "new.pt").write_bytes(b"B" * 4096)
        os.replace(tmp_path / "new.pt", path)
    else:
        path.write_bytes(b"B" * 4096)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same size and mtime as before
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert cached_sha256(path, cache_dir=cache) == hashlib.sha256(b"B" * 4096).hexdigest()
