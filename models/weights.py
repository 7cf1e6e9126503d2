"""Where model weights come from: a registry of known files and one resolution order.

Weights are never downloaded behind the operator's back (test machines are offline):
:func:`resolve_weights` looks for a file in a fixed order and downloads only when
asked to (``download=True`` or ``CELMASK_DOWNLOAD=1``), atomically, into the cache::

    path = resolve_weights(None, SAM_WEIGHTS["vit_b"], env_var="CELMASK_SAM_CHECKPOINT")
    model_id = weights_id(path)         # "sam_vit_b_01ec64.pth@sha256:ec2d..." for the manifest

Order: an existing path given explicitly; the file named by the per-kind environment
variable; ``$CELMASK_WEIGHTS_DIR/<file>``; the cache directory
(``$XDG_CACHE_HOME/celmask/weights``, else ``~/.cache/celmask/weights``); a download
into the cache. A file that claims to be a known one (same file name) must have its
published size and SHA-256; every file must look like a PyTorch checkpoint. A value
may pin the file's digest, ``PATH@sha256:HEX`` (the form of the manifest's model ids);
a kind of weights published without digests (SAM 2) must be pinned, so a file
swapped under its name is refused instead of silently changing the masks.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from celmask.tasks.core.errors import CelmaskError

WEIGHTS_DIR_ENV = "CELMASK_WEIGHTS_DIR"
DOWNLOAD_ENV = "CELMASK_DOWNLOAD"
HASHES_NAME = "sha256.json"
"""Per-cache-directory record of file digests, keyed by path, size and mtime."""
PIN = "@sha256:"
"""Between a weights path and the SHA-256 it is pinned to."""


@dataclass(frozen=True)
class WeightSpec:
    """A published weights file."""

    name: str
    filename: str
    url: str
    sha256: str | None
    """Full hex digest, or None where the publisher gives none."""
    size: int | None
    """Bytes, or None where unknown."""
    source: str
    """Where a person gets it (a page, not the file)."""


_SAM_SOURCE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
# The hex in Meta's file names is the start of the file's MD5, not its SHA-256, so
# torch.hub's hash-prefix convention does not apply. The SHA-256 digests and sizes are
# the ones many independent projects pin for these URLs (e.g. micro_sam, the
# ComfyUI-Impact manifests, Slicer SegmentWithSAM); they agree with each other.
SAM_WEIGHTS: dict[str, WeightSpec] = {
    "vit_b": WeightSpec(
        "sam_vit_b",
        "sam_vit_b_01ec64.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
        _SAM_SOURCE,
    ),
    "vit_l": WeightSpec(
        "sam_vit_l",
        "sam_vit_l_0b3195.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
        _SAM_SOURCE,
    ),
    "vit_h": WeightSpec(
        "sam_vit_h",
        "sam_vit_h_4b8939.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
        _SAM_SOURCE,
    ),
}
SAM_WEIGHTS["default"] = SAM_WEIGHTS["vit_h"]  # segment_anything's registry calls vit_h "default"

# ultralytics' own SAM 2 / 2.1 conversions (the files ``ultralytics.SAM("sam2.1_b.pt")``
# loads), from the ultralytics/assets release its docs link (docs/en/models/sam-2.md).
# ultralytics publishes no checksums for them, so a setting naming one must pin its
# digest (resolve_weights(pinned=True)); the model id records what was used.
SAM2_WEIGHTS: dict[str, WeightSpec] = {
    f"{version}_{size}": WeightSpec(
        f"{version}_{size}",
        f"{version}_{size}.pt",
        f"https://github.com/ultralytics/assets/releases/download/v8.3.0/{version}_{size}.pt",
        None,
        None,
        "https://docs.ultralytics.com/models/sam-2/",
    )
    for version in ("sam2", "sam2.1")
    for size in "tsbl"
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "celmask" / "weights"


def split_pin(value: str | os.PathLike) -> tuple[str, str | None]:
    """``PATH@sha256:HEX`` -> (PATH, HEX); a value without a pin -> (value, None)."""
    text = os.fspath(value)
    path, sep, digest = text.rpartition(PIN)
    if not sep:
        return text, None
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CelmaskError(
            text,
            "pins a SHA-256 that is not 64 lowercase hex digits",
            "write PATH@sha256:<its SHA-256, as sha256sum prints it>",
        )
    return path, digest


def resolve_weights(
    value: str | os.PathLike | None,
    spec: WeightSpec | None,
    *,
    env_var: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    key: str = "weights",
    pinned: bool = False,
) -> Path:
    """The weights file to load, verified (:func:`verify_weights`) and, when ``value``
    (or ``$env_var``) pins a digest, of that digest.

    ``value``: a path (must exist), a bare file name, or None for ``spec.filename``;
    any of them ``@sha256:HEX``. The first of: ``value`` as an existing path; when
    ``value`` is None, the file named by ``$env_var``; ``$CELMASK_WEIGHTS_DIR/<name>``;
    ``cache_dir/<name>``; a download of ``spec`` into ``cache_dir`` when ``download``
    (None: ``CELMASK_DOWNLOAD=1``). ``pinned``: a file without a published digest must
    be pinned. ``key``: the config setting the operator would change, named in errors."""
    pin = None
    if value is not None:
        value, pin = split_pin(value)
    elif env_var and os.environ.get(env_var):
        _, pin = split_pin(os.environ[env_var])
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = _find_weights(value, spec, cache, env_var=env_var, download=download, key=key)
    published = spec is not None and spec.sha256 is not None and path.name == spec.filename  # verified already
    if pin is None and pinned and not published:
        digest = cached_sha256(path, cache_dir=cache, fresh=True)
        raise CelmaskError(
            path,
            "has no published SHA-256 to be checked against, so it must be pinned",
            f"set {key}={path}{PIN}<its SHA-256> once you trust the file (this one's is {digest})",
        )
    if pin is not None:
        digest = cached_sha256(path, cache_dir=cache, fresh=True)
        if digest != pin:
            raise CelmaskError(
                path,
                f"SHA-256 {digest[:12]}… is not the pinned {pin[:12]}… (another file, or a changed one)",
                f"put the pinned file back, or pin this one in {key} once you trust it",
            )
    return path


def _find_weights(
    value: str | None, spec: WeightSpec | None, cache: Path, *, env_var: str | None, download: bool | None, key: str
) -> Path:
    """:func:`resolve_weights` before the pin."""
    hint = f" or ${env_var}" if env_var else ""
    if value is not None and (Path(value).is_file() or Path(value).name != str(value)):
        path = Path(value).expanduser()  # an explicit path wins, and a missing one is not silently replaced
        if not path.is_file():
            published = f" ({spec.name} is published at {spec.url})" if spec else ""
            raise CelmaskError(path, "weights file not found", f"fix {key}{published}")
        return verify_weights(path, spec, cache_dir=cache)
    if value is None and env_var and os.environ.get(env_var):  # a bare file name asked for is not overridden
        path = Path(split_pin(os.environ[env_var])[0])
        if not path.is_file():
            raise CelmaskError(path, f"weights file named by ${env_var} not found", f"fix or unset {env_var}")
        return verify_weights(path, spec, cache_dir=cache)
    if value is None and spec is None:
        raise CelmaskError(key, "no weights given and no known default", f"set {key}{hint} to a weights file")
    name = Path(value).name if value is not None else spec.filename
    places = [Path(os.environ[WEIGHTS_DIR_ENV])] if os.environ.get(WEIGHTS_DIR_ENV) else []
    places.append(cache)
    for place in places:
        if (place / name).is_file():
            return verify_weights(place / name, spec, cache_dir=cache)
    if download is None:
        download = os.environ.get(DOWNLOAD_ENV) == "1"
    if download and spec is not None and name == spec.filename:
        return download_weights(spec, cache)
    looked = ", ".join(str(p) for p in places)
    raise CelmaskError(
        name, f"weights not found (looked in {looked})", f"set {key}{hint} to the file" + _where_to_get(spec, cache)
    )


def _where_to_get(spec: WeightSpec | None, cache: Path) -> str:
    if spec is None:
        return ""
    return f", or download {spec.url} into {cache} (or set {DOWNLOAD_ENV}=1 to let celmask do it)"


def verify_weights(path: Path, spec: WeightSpec | None, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """``path`` if it looks like a PyTorch checkpoint and, when it has ``spec``'s file
    name, also has its published size and SHA-256; else a one-line error."""
    claimed = spec is not None and path.name == spec.filename
    size = path.stat().st_size
    if claimed and spec.size is not None and size != spec.size:
        raise CelmaskError(
            path,
            f"is {size} bytes, {spec.name} is {spec.size} (truncated or another file)",
            f"download it again from {spec.url}",
        )
    check_torch_file(path)
    if claimed and spec.sha256 is not None:
        digest = cached_sha256(path, cache_dir=cache_dir)
        if digest != spec.sha256:
            raise CelmaskError(
                path,
                f"SHA-256 {digest[:12]}… is not {spec.name}'s {spec.sha256[:12]}… (corrupt or another file)",
                f"download it again from {spec.url}",
            )
    return path


def check_torch_file(path: Path) -> None:
    """Reject what ``torch.load`` cannot read, cheaply: a checkpoint is a zip archive
    (complete only with its central directory at the end) or a legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise CelmaskError(
                path, "is a truncated or corrupt checkpoint (its zip directory is missing)", "download or copy it again"
            )
        return
    if not (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise CelmaskError(path, "is not a PyTorch checkpoint", "pass a .pt/.pth weights file")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path, *, cache_dir: str | os.PathLike | None = None, fresh: bool = False) -> str:
    """SHA-256 of ``path``, remembered per (path, size, mtime, inode, ctime) in the cache
    directory, so a multi-GB checkpoint is read once, not at every run. A file replaced
    by another of the same size, its mtime set back, still has another inode (a rename
    over it) or a newer ctime (written in place; no one can set ctime back), so it is
    read again. ``fresh``: read it anyway (a check against a pin trusts no record)."""
    record = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / HASHES_NAME
    stat = path.stat()
    entry = str(path.resolve())
    key = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
    known = _read_hashes(record).get(entry)
    if not fresh and isinstance(known, list) and known[:-1] == key:
        return known[-1]
    digest = file_sha256(path)
    _remember(record, entry, [*key, digest])
    return digest


def weights_id(path: Path, *, cache_dir: str | os.PathLike | None = None) -> str:
    """``<file name>@sha256:<hex>``: what the manifest records as the weights used."""
    return f"{path.name}@sha256:{cached_sha256(path, cache_dir=cache_dir)}"


def model_id(kind: str, weights: Path | None = None, *, version: str | None = None) -> str:
    """What the manifest records as the model of a stage, one recipe for every backend:
    ``<kind>:<file>@sha256:<hex>`` for a model with weights, ``<kind>:<version>`` for one
    without (or with random weights). It depends on the settings and the weight files
    only, so a finished shot is recognised without building its models."""
    if (weights is None) == (version is None):
        raise ValueError("model_id needs weights or a version, not both")
    return f"{kind}:{weights_id(weights)}" if weights is not None else f"{kind}:{version}"


def _read_hashes(record: Path) -> dict[str, list]:
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return {}


def _remember(record: Path, entry: str, value: list) -> None:
    """Best effort: a read-only cache only costs a re-hash next time."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        known = _read_hashes(record)
        known[entry] = value
        fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", dir=record.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f)
        os.replace(tmp, record)
    except OSError:
        pass


def download_weights(spec: WeightSpec, cache_dir: Path, *, timeout: float = 60.0) -> Path:
    """Download ``spec`` into ``cache_dir`` under a temporary name, verify it (length,
    published size and SHA-256, checkpoint format), then rename it into place; on any
    failure nothing is left behind."""
    target = cache_dir / spec.filename
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=cache_dir)
    except OSError as error:
        raise CelmaskError(
            cache_dir,
            f"cannot write the weights cache ({error.strerror})",
            f"set {WEIGHTS_DIR_ENV} or XDG_CACHE_HOME to a writable directory",
        ) from error
    tmp = Path(tmp_name)
    try:
        digest, size, expected = _fetch(spec.url, fd, timeout)
        if expected is not None and size != expected:
            raise CelmaskError(spec.url, f"download stopped after {size} of {expected} bytes", "try again")
        if spec.size is not None and size != spec.size:
            raise CelmaskError(
                spec.url, f"sent {size} bytes, {spec.name} is {spec.size}", f"get it by hand from {spec.source}"
            )
        if spec.sha256 is not None and digest != spec.sha256:
            raise CelmaskError(
                spec.url,
                f"sent a file with SHA-256 {digest[:12]}…, not {spec.name}'s {spec.sha256[:12]}…",
                f"get it by hand from {spec.source}",
            )
        check_torch_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stat = target.stat()
    _remember(cache_dir / HASHES_NAME, str(target.resolve()), [stat.st_size, stat.st_mtime_ns, digest])
    return target


def _fetch(url: str, fd: int, timeout: float) -> tuple[str, int, int | None]:
    """Stream ``url`` into the open file ``fd``: (sha256, bytes written, Content-Length)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                size += len(block)
    except (OSError, http.client.HTTPException) as error:  # URLError and timeouts are OSErrors
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise CelmaskError(
            url,
            f"download failed after {size} bytes ({type(error).__name__}: {reason})",
            "check the connection and try again",
        ) from error
    return digest.hexdigest(), size, int(length) if length is not None else None
