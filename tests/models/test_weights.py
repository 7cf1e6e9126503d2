"""The weights registry: resolution order, verification, and downloads from a real HTTP
server on 127.0.0.1 (real urllib; nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from celmask.models.weights import (
    HASHES_NAME,
    SAM2_WEIGHTS,
    SAM_WEIGHTS,
    WeightSpec,
    cached_sha256,
    default_cache_dir,
    resolve_weights,
    weights_id,
)
from celmask.tasks.core.errors import CelmaskError

ENV = "CELMASK_TEST_CHECKPOINT"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("CELMASK_WEIGHTS_DIR", "CELMASK_DOWNLOAD", ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def checkpoint(path: Path, value: float = 0.0, *, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.full((4,), value)}, path, _use_new_zipfile_serialization=not legacy)
    return path


def spec_for(path: Path, url: str = "http://127.0.0.1:9/none.pth") -> WeightSpec:
    data = path.read_bytes()
    return WeightSpec("toy", path.name, url, hashlib.sha256(data).hexdigest(), len(data), "https://example.invalid/toy")


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# -- resolution order ------------------------------------------------------------------


def test_explicit_existing_path_wins(tmp_path, monkeypatch):
    mine = checkpoint(tmp_path / "mine" / "toy.pth", 1.0)
    other = checkpoint(tmp_path / "env" / "toy.pth", 2.0)
    monkeypatch.setenv(ENV, str(other))
    monkeypatch.setenv("CELMASK_WEIGHTS_DIR", str(other.parent))
    checkpoint(tmp_path / "cache" / "toy.pth", 3.0)
    assert resolve_weights(mine, None, env_var=ENV, cache_dir=tmp_path / "cache") == mine


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path):
    cache = tmp_path / "cache"
    cached = checkpoint(cache / "toy.pth")
    with pytest.raises(CelmaskError) as error:
        resolve_weights(tmp_path / "nowhere" / "toy.pth", spec_for(cached), cache_dir=cache, key="refiner.checkpoint")
    text = one_line(error)
    assert "nowhere/toy.pth: weights file not found" in text and "refiner.checkpoint" in text


def test_env_var_then_weights_dir_then_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    in_cache = checkpoint(cache / "toy.pth", 3.0)
    spec = replace(spec_for(in_cache), sha256=None, size=None)  # three different files, all "toy.pth"
    assert resolve_weights(None, spec, env_var=ENV, cache_dir=cache) == in_cache
    in_dir = checkpoint(tmp_path / "shared" / "toy.pth", 2.0)
    monkeypatch.setenv("CELMASK_WEIGHTS_DIR", str(in_dir.parent))
    assert resolve_weights(None, spec, env_var=ENV, cache_dir=cache) == in_dir
    named = checkpoint(tmp_path / "elsewhere" / "any-name.pth", 1.0)
    monkeypatch.setenv(ENV, str(named))
    assert resolve_weights(None, spec, env_var=ENV, cache_dir=cache) == named
    # a bare file name asked for explicitly is looked up, not replaced by the variable's file
    assert resolve_weights("toy.pth", spec, env_var=ENV, cache_dir=cache) == in_dir


def test_env_var_naming_a_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(CelmaskError, match=f"named by \\${ENV} not found"):
        resolve_weights(None, spec_for(checkpoint(tmp_path / "toy.pth")), env_var=ENV, cache_dir=tmp_path / "c")


def test_default_cache_is_under_xdg_cache_home(tmp_path, monkeypatch):
    assert default_cache_dir() == tmp_path / "xdg" / "celmask" / "weights"
    cached = checkpoint(default_cache_dir() / "toy.pth")
    assert resolve_weights(None, spec_for(cached)) == cached
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "celmask" / "weights"


def test_missing_everywhere_names_file_url_and_key_and_downloads_nothing(tmp_path, server):
    spec = spec_for(checkpoint(tmp_path / "src" / "toy.pth"), server.url("toy.pth"))
    with pytest.raises(CelmaskError) as error:
        resolve_weights(None, spec, cache_dir=tmp_path / "cache", key="refiner.checkpoint")
    text = one_line(error)
    assert text.startswith("toy.pth: weights not found")
    assert spec.url in text and "refiner.checkpoint" in text and "CELMASK_DOWNLOAD=1" in text
    assert server.requests == []


def test_no_value_and_no_spec_is_an_error(tmp_path):
    with pytest.raises(CelmaskError, match="propagator.weights"):
        resolve_weights(None, None, cache_dir=tmp_path, key="propagator.weights")


# -- verification ----------------------------------------------------------------------


def test_checksum_mismatch_is_rejected_for_the_published_name_only(tmp_path):
    real = checkpoint(tmp_path / "real" / "toy.pth", 1.0)
    spec = spec_for(real)
    fake = checkpoint(tmp_path / "cache" / "toy.pth", 2.0)  # same size, other bytes
    with pytest.raises(CelmaskError) as error:
        resolve_weights(None, spec, cache_dir=fake.parent)
    assert "SHA-256" in one_line(error) and spec.url in str(error.value)
    own = checkpoint(tmp_path / "mine" / "finetuned.pth", 2.0)  # the operator's own file: no published digest
    assert resolve_weights(own, spec, cache_dir=tmp_path / "cache") == own


def test_truncated_files_are_rejected(tmp_path):
    real = checkpoint(tmp_path / "real" / "toy.pth")
    short = tmp_path / "cache" / "toy.pth"
    short.parent.mkdir()
    short.write_bytes(real.read_bytes()[:-100])
    with pytest.raises(CelmaskError, match="truncated"):
        resolve_weights(None, spec_for(real), cache_dir=short.parent)
    with pytest.raises(CelmaskError, match="truncated or corrupt checkpoint"):  # no published size: the zip tells
        resolve_weights(short, None, cache_dir=tmp_path / "cache")


def test_non_torch_files_are_rejected_and_legacy_pickles_accepted(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(CelmaskError) as error:
        resolve_weights(text, None, cache_dir=tmp_path / "c")
    assert one_line(error) == f"{text}: is not a PyTorch checkpoint; pass a .pt/.pth weights file"
    legacy = checkpoint(tmp_path / "old.pth", legacy=True)
    assert resolve_weights(legacy, None, cache_dir=tmp_path / "c") == legacy


def test_digests_are_cached_per_path_size_and_mtime(tmp_path):
    cache = tmp_path / "cache"
    path = checkpoint(tmp_path / "toy.pth", 1.0)
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_id(path, cache_dir=cache) == f"toy.pth@sha256:{real}"
    record = cache / HASHES_NAME
    known = json.loads(record.read_text())
    known[str(path.resolve())][-1] = "0" * 64  # a remembered digest is used as is: the file is not read again
    record.write_text(json.dumps(known))
    assert cached_sha256(path, cache_dir=cache) == "0" * 64
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # changed file: hashed again
    assert cached_sha256(path, cache_dir=cache) == real


def test_read_only_cache_still_hashes(tmp_path):
    path = checkpoint(tmp_path / "toy.pth")
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert cached_sha256(path, cache_dir=blocked) == hashlib.sha256(path.read_bytes()).hexdigest()


# -- downloads -------------------------------------------------------------------------


class Server:
    """Files served on 127.0.0.1; ``cut`` paths send their full Content-Length but only
    half the bytes, then hang up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                owner.requests.append(name)
                if name not in owner.files:
                    self.send_error(404)
                    return
                data = owner.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if name in owner.cut else data)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def served(server: Server, tmp_path: Path, name: str = "toy.pth") -> WeightSpec:
    source = checkpoint(tmp_path / "published" / name, 7.0)
    server.files[name] = source.read_bytes()
    return spec_for(source, server.url(name))


def test_download_when_allowed_lands_verified_in_the_cache(tmp_path, server):
    spec = served(server, tmp_path)
    cache = tmp_path / "cache"
    path = resolve_weights(None, spec, cache_dir=cache, download=True)
    assert path == cache / "toy.pth" and path.read_bytes() == server.files["toy.pth"]
    assert sorted(p.name for p in cache.iterdir()) == [HASHES_NAME, "toy.pth"]  # no temporary left
    assert weights_id(path, cache_dir=cache) == f"toy.pth@sha256:{spec.sha256}"
    assert resolve_weights(None, spec, cache_dir=cache, download=True) == path
    assert server.requests == ["toy.pth"]  # the second resolution found the cached file


def test_celmask_download_env_enables_downloads(tmp_path, server, monkeypatch):
    spec = served(server, tmp_path)
    monkeypatch.setenv("CELMASK_DOWNLOAD", "1")
    assert resolve_weights(None, spec, cache_dir=tmp_path / "cache").is_file()
    assert server.requests == ["toy.pth"]


@pytest.mark.parametrize("fault", ["checksum", "size", "cut", "missing", "not-torch"])
def test_failed_downloads_leave_nothing_behind(tmp_path, server, fault):
    spec = served(server, tmp_path)
    if fault == "checksum":
        spec = replace(spec, sha256="0" * 64)
    elif fault == "size":
        spec = replace(spec, size=spec.size + 1, sha256=None)
    elif fault == "cut":
        server.cut.add("toy.pth")
    elif fault == "missing":
        spec = replace(spec, url=server.url("gone.pth"))
    else:
        server.files["toy.pth"] = b"<html>a login page</html>"
        spec = replace(spec, sha256=None, size=None)
    cache = tmp_path / "cache"
    with pytest.raises(CelmaskError) as error:
        resolve_weights(None, spec, cache_dir=cache, download=True)
    text = one_line(error)
    assert {
        "checksum": "SHA-256",
        "size": "sent",
        "cut": "stopped after",
        "missing": "HTTPError",
        "not-torch": "not a PyTorch checkpoint",
    }[fault] in text
    assert list(cache.iterdir()) == []


def test_only_the_published_file_is_downloaded(tmp_path, server):
    spec = served(server, tmp_path)
    with pytest.raises(CelmaskError, match="weights not found"):
        resolve_weights("other.pth", spec, cache_dir=tmp_path / "cache", download=True)
    assert server.requests == []


# -- the registry ----------------------------------------------------------------------


def test_registry_knows_sam_and_sam2():
    for kind, md5_start in (("vit_b", "01ec64"), ("vit_l", "0b3195"), ("vit_h", "4b8939")):
        spec = SAM_WEIGHTS[kind]
        assert spec.filename == f"sam_{kind}_{md5_start}.pth"
        assert spec.url == f"https://dl.fbaipublicfiles.com/segment_anything/{spec.filename}"
        assert len(spec.sha256) == 64 and not spec.sha256.startswith(md5_start)  # the name holds an MD5 prefix
    assert SAM_WEIGHTS["default"] is SAM_WEIGHTS["vit_h"]
    assert sorted(SAM2_WEIGHTS) == sorted(f"{v}_{s}" for v in ("sam2", "sam2.1") for s in "tsbl")
    assert SAM2_WEIGHTS["sam2.1_b"].url == "https://github.com/ultralytics/assets/releases/download/v8.3.0/sam2.1_b.pt"
    assert all(s.sha256 is None for s in SAM2_WEIGHTS.values())
