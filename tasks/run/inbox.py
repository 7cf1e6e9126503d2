"""An inbox of episodes: the videos in a folder (local, or any fsspec URL such as
``s3://bucket/prefix``) and which of them are already segmented into OUT.

The ``nightly`` flow runs every video here that is not done. A video is done when
``OUT/<episode_id>/_SUCCESS.json`` exists and, for local files, its
``video_fingerprint`` is the file's own: a file replaced under the same name is run
again. Remote videos are not copied just to be fingerprinted: their version in the
listing (size, and the storage's ETag or modification time where it gives one) is
compared with the one recorded when their episode completed. Names starting with
``.`` or ``_`` are skipped (hidden files, uploads in progress), and so is anything
that is not a video file; a symbolic link that leaves a local inbox is listed with a
problem and never opened. Credentials in an inbox URL (``s3://KEY:SECRET@bucket``,
signed query strings) are never shown: errors, records and the nightly table carry
:func:`redact` of it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from celmask.tasks.core.atomic import write_atomic
from celmask.tasks.core.errors import CelmaskError
from celmask.tasks.manifest.layout import SUCCESS_NAME, inbox_source_path
from celmask.tasks.run.lock import alive
from celmask.tasks.video import fingerprint

VIDEO_SUFFIXES = frozenset(f".{s}" for s in "mp4 mkv mov avi webm m4v ts m2ts gif".split())
"""File suffixes taken as videos, compared lower-cased."""

VERSION_KEYS = ("ETag", "etag", "md5Hash", "LastModified", "updated", "mtime", "created")
"""Listing fields that change when a remote file is replaced (s3fs, gcsfs, others), the
first one present is used."""


@dataclass(frozen=True)
class InboxItem:
    episode_id: str
    """The file's name without its suffix: the episode goes to ``OUT/<episode_id>/``."""
    source: str
    """Local path, or the URL of a remote file."""
    size: int
    done: bool
    """Already segmented: ``OUT/<episode_id>/_SUCCESS.json`` is there and (local files) matches."""
    reason: str
    """Why it is done or not, in a few words."""
    problem: str = ""
    """Why it cannot be run at all (e.g. another video has the same episode id); empty when it can."""
    version: str = ""
    """A remote file's version in its listing (see :data:`VERSION_KEYS`); empty for local files."""

    @property
    def name(self) -> str:
        return self.source.rstrip("/").rsplit("/", 1)[-1] if is_url(self.source) else Path(self.source).name

    @property
    def remote(self) -> bool:
        return is_url(self.source)


_USERINFO = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@:\s]+(?::[^@\s]*)?@")
_SECRET_QUERY = re.compile(
    r"([?&][^=&\s]*(?:sig|signature|token|key|secret|password|credential)[^=&\s]*=)[^&\s]+", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` (a URL, or a message naming one) with its credentials replaced by ``***``:
    the user and password of a URL, and query values that look like keys or signatures."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", str(text)))


def is_url(location: str | os.PathLike) -> bool:
    """A URL fsspec opens (``memory://``, ``s3://``, ...); ``file://`` counts as local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _local(location: str) -> Path:
    return Path(location.removeprefix("file://")).expanduser()


def _wanted(name: str) -> bool:
    return not name.startswith((".", "_")) and Path(name).suffix.lower() in VIDEO_SUFFIXES


def _outside(path: Path, root: Path) -> str:
    """Where a symbolic link in the inbox leads when that is outside it, else ''."""
    if not path.is_symlink():
        return ""
    target = Path(os.path.realpath(path))
    return "" if target.is_relative_to(os.path.realpath(root)) else str(target)


def _list_local(inbox: str) -> list[tuple[str, str, int, str, str]]:
    root = _local(inbox)
    if not root.exists():
        raise CelmaskError(inbox, "inbox does not exist", "create it, or pass the folder new episodes are put in")
    if not root.is_dir():
        raise CelmaskError(inbox, "inbox is not a directory", "pass the folder new episodes are put in")
    try:
        items = []
        for p in root.iterdir():
            if not _wanted(p.name):
                continue
            if target := _outside(p, root):
                items.append((p.name, str(p), 0, "", f"a link to {target}, outside the inbox: not opened"))
            elif p.is_file():
                items.append((p.name, str(p), p.stat().st_size, "", ""))
        return items
    except OSError as error:
        raise CelmaskError(
            inbox, f"inbox cannot be listed ({error.strerror or error})", "check its permissions"
        ) from error


def _list_remote(inbox: str) -> list[tuple[str, str, int, str, str]]:
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(inbox)
        if not fs.isdir(root):
            raise CelmaskError(
                redact(inbox), "inbox does not exist", "create it, or pass the URL new episodes are put in"
            )
        entries = fs.ls(root, detail=True)
    except CelmaskError:
        raise
    except ImportError as error:  # fsspec names the package the protocol needs
        raise CelmaskError(
            redact(inbox), f"cannot be opened ({redact(error)})", "install that package in celmask's environment"
        ) from None
    except Exception as error:  # unknown protocol, credentials, network
        raise CelmaskError(
            redact(inbox),
            f"inbox cannot be listed ({type(error).__name__}: {redact(error)})",
            "check the URL and the storage's credentials",
        ) from None
    base = inbox.rstrip("/")
    items = []
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "file" and _wanted(name):
            size = int(entry.get("size") or 0)
            stamp = next((f", {key} {entry[key]}" for key in VERSION_KEYS if entry.get(key)), "")
            items.append((name, f"{base}/{name}", size, f"{size} bytes{stamp}", ""))
    return items


def _done(source: str, version: str, episode_dir: Path) -> tuple[bool, str]:
    success = episode_dir / SUCCESS_NAME
    if not success.is_file():
        return False, "new" if not episode_dir.exists() else f"not complete (no {SUCCESS_NAME})"
    try:
        recorded = json.loads(success.read_text()).get("video_fingerprint")
    except (OSError, ValueError, AttributeError):
        return False, f"{SUCCESS_NAME} unreadable"
    if is_url(source):
        try:
            made_from = json.loads(inbox_source_path(episode_dir).read_text()).get("version")
        except (OSError, ValueError, AttributeError):
            return True, f"{SUCCESS_NAME} present (remote file, no version recorded)"
        if made_from != version:
            return False, f"replaced since its {SUCCESS_NAME} ({version}, was {made_from})"
        return True, f"{SUCCESS_NAME} present, remote file unchanged ({version})"
    try:
        actual = fingerprint(source)
    except CelmaskError as error:
        return False, f"cannot be fingerprinted ({error.problem})"
    if actual != recorded:
        return False, f"replaced since its {SUCCESS_NAME} (fingerprint differs)"
    return True, f"{SUCCESS_NAME} matches the file"


def find_episodes(inbox: str, out: str | Path) -> list[InboxItem]:
    """The videos in ``inbox`` (a local folder or an fsspec URL), sorted by name, each
    with whether ``OUT/<episode_id>/`` already holds it complete.

    Two videos with one episode id (``ep01.mp4`` and ``ep01.mkv``) would write one
    directory: the first by name is kept, the others get a ``problem``. Raises
    :class:`CelmaskError` when the inbox does not exist or cannot be listed.
    """
    inbox = str(inbox)
    remote = is_url(inbox)
    listed = sorted(_list_remote(inbox) if remote else _list_local(inbox))
    out = Path(out)
    first: dict[str, str] = {}
    items = []
    for name, source, size, version, problem in listed:
        episode_id = Path(name).stem
        if problem:
            items.append(InboxItem(episode_id, source, size, False, "not run", problem, version))
            continue
        if episode_id in first:
            items.append(
                InboxItem(
                    episode_id,
                    source,
                    size,
                    False,
                    "not run",
                    f"same episode id as {first[episode_id]}; rename one of them",
                    version,
                )
            )
            continue
        first[episode_id] = name
        done, reason = _done(source, version, out / episode_id)
        items.append(InboxItem(episode_id, source, size, done, reason, version=version))
    return items


def fetch(item: InboxItem, staging: str | Path) -> Path:
    """A local path of ``item``'s video: a local source as it is; a remote one copied to
    ``staging/<name>`` (through a temporary name, so a partial copy is never taken for
    the video), or the copy already there when it has the same size."""
    if not item.remote:
        return _local(item.source)
    staging = Path(staging)
    target = staging / item.name
    if target.is_file() and target.stat().st_size == item.size:
        return target
    import fsspec

    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.glob(f".{glob.escape(item.name)}.*.part"):  # a killed run's copy
        if stale.name.split(".")[-2].isdigit() and not alive(int(stale.name.split(".")[-2])):
            stale.unlink(missing_ok=True)
    partial = staging / f".{item.name}.{os.getpid()}.part"
    try:
        with fsspec.open(item.source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        os.replace(partial, target)
    except Exception as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise CelmaskError(
            redact(item.source),
            f"cannot be copied to {staging} ({type(error).__name__}: {redact(error)})",
            "check the storage and the free space; the next run tries again",
        ) from None
    return target


def record_source(item: InboxItem, out: str | Path) -> None:
    """Note which version of a remote video ``OUT/<episode_id>/`` was made from, so a
    file replaced in the inbox is run again (local files carry their fingerprint)."""
    record = inbox_source_path(Path(out) / item.episode_id)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(record, json.dumps({"source": redact(item.source), "version": item.version}).encode())
