"""Streaming video I/O on FFmpeg: probe, content fingerprint, frame iterator.

Every other stage reads video through this module. Frames stream out of one
``ffmpeg`` process as raw RGB (or gray) at the size asked for, scaled inside
FFmpeg after its autorotation; memory stays at a few frames whatever the
episode length. Indices are presentation-order positions of the frames FFmpeg
decodes, and times come from the stream's own timestamps, so both are right
on variable-frame-rate files.

Usage::

    from tasks.video import probe, iter_frames, frame_times

    info = probe("ep01.mkv")                      # VideoError on bad input
    for frame in iter_frames("ep01.mkv", width=160, gray=True):
        ...                                       # frame.index, frame.time, frame.image (90, 160) uint8
    times = frame_times("ep01.mkv")               # float64 seconds, one per decoded frame
    shot = list(iter_frames("ep01.mkv", width=1024, start=1200, end=1320, times=times))

Problems with the input raise :class:`tasks.errors.VideoError` (one line: file,
problem, fix) before any frame is yielded wherever the problem is knowable up
front. Damage inside a stream is reported per frame as :class:`DecodeIssue`
(``on_issue`` callback, or a warning on the ``celmask.video`` logger), and a
decode that stops before the end of the stream raises ``VideoError`` naming the
frame where it stopped.

Frame numbering contract: index ``i`` is the ``i``-th frame FFmpeg delivers when
decoding the whole video stream from its start with every frame kept
(``-fps_mode passthrough``) -- the same numbering as ``ffprobe -show_frames``
and as reading frame by frame with OpenCV; ``len(frame_times(path))`` frames in all. Packets that cannot be decoded at all
produce no frame and so no index (a :class:`DecodeIssue` says so).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import queue
import re
import shutil
import stat
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import ffmpeg  # ffmpeg-python: builds the ffmpeg command line
import numpy as np

from tasks.errors import VideoError

log = logging.getLogger("celmask.video")

FINGERPRINT_SCHEME = "b2s1"
"""Prefix of :func:`fingerprint` ids; bump it if the sampling scheme ever changes."""

FINGERPRINT_CHUNK = 1 << 20
"""Bytes per sampled chunk (1 MiB)."""

FINGERPRINT_SAMPLES = 16
"""Chunks sampled from files larger than ``FINGERPRINT_SAMPLES * FINGERPRINT_CHUNK``."""

HEAD_PACKETS = 300
"""Packets :func:`probe` reads from the start of the stream (frame-rate check, empty streams)."""

TAIL_SECONDS = 3.0
"""How far before the stated end :func:`probe` seeks to check the data really reaches it."""

PROBE_TIMEOUT_S = 300
"""Wall-clock limit for one ffprobe call (a stalled network mount must not hang a worker)."""

SEEK_MIN_S = 0.5
"""Ranges starting earlier than this many seconds into the stream are decoded from the start."""

SEEK_MARGIN_S = 0.05
"""``-ss`` goes this far before the wanted frame's time (FFmpeg then starts at the keyframe before)."""

MAX_LOGGED_ISSUES = 20
"""Default issue reporting logs this many warnings per decode, then one summary line."""

INSTALL_FIX = (
    "install FFmpeg (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg) "
    "so that ffmpeg and ffprobe are on PATH"
)

_STILL_IMAGE_CODECS = frozenset(
    {"png", "apng", "mjpeg", "jpegls", "jpeg2000", "bmp", "gif", "webp", "tiff", "qoi", "jpegxl", "pam", "ppm"}
)
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # FFmpeg "decodes" .txt/.nfo files as ANSI art
_MOV_OR_MKV = ("mov", "matroska")  # containers whose stated duration comes from an index


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file's (first real) video stream."""

    path: str
    """Absolute path of the file."""
    codec: str
    """FFmpeg codec name, e.g. ``"h264"``, ``"hevc"``, ``"gif"``."""
    pix_fmt: str
    """Decoded pixel format, e.g. ``"yuv420p"``, ``"yuv420p10le"``."""
    bit_depth: int
    """Bits per colour component (8, 10, 12, ...)."""
    width: int
    """Display width in pixels, after rotation: the width of decoded frames at native size."""
    height: int
    """Display height in pixels, after rotation."""
    rotation: int
    """Clockwise display rotation in degrees (0, 90, 180, 270) that FFmpeg applies when decoding."""
    frame_rate: str
    """Average frame rate as a fraction string, e.g. ``"24000/1001"``."""
    fps: float
    """``frame_rate`` as a float."""
    variable_frame_rate: bool
    """True when frame durations vary (from packet timestamps of the first ``HEAD_PACKETS`` frames)."""
    duration: float
    """Stream duration in seconds (0.0 when the container does not say)."""
    frame_count: int
    """Frames the container lists (minus frames an edit list hides), else ``round(duration * fps)``."""
    frame_count_exact: bool
    """True when ``frame_count`` comes from the container and agrees with duration*fps.
    Only ``len(frame_times(path))`` is authoritative."""
    start_time: float
    """Stream start time in seconds (timestamp of its first frame)."""
    has_audio: bool
    """Whether the file has at least one audio stream."""
    size_bytes: int
    """File size in bytes."""
    fingerprint: str
    """Content id from :func:`fingerprint`."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int
    """Presentation-order frame index from the start of the stream (0-based)."""
    time: float
    """Presentation time in seconds from the stream's start time (from the stream's own timestamps)."""
    image: np.ndarray
    """``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 gray; C-contiguous and writable."""


@dataclass(frozen=True)
class DecodeIssue:
    """A decoder or demuxer complaint, attached to the next frame delivered after it."""

    index: int
    """Frame index the complaint is attached to (the frame delivered next; with frame-threaded
    decoding and B-frames the damaged frame can be a few frames later). When decoding stopped,
    the index of the first frame that did not come."""
    time: float
    """Presentation time of that frame in seconds (estimated when it did not come)."""
    message: str
    """FFmpeg's message(s) for this frame, one line."""


# --------------------------------------------------------------------------- files, tools


def _where(path: str | os.PathLike) -> str:
    return os.fspath(path)


def _check_file(path: str | os.PathLike) -> tuple[str, os.stat_result]:
    """Return (absolute path, stat) of a readable, non-empty regular file, or raise VideoError."""
    where = _where(path)
    abspath = os.path.abspath(where)
    try:
        st = os.stat(abspath)
    except FileNotFoundError:
        raise VideoError(where, "file does not exist", "check the path (and that the volume is mounted)") from None
    except PermissionError:
        raise VideoError(where, "cannot be accessed (permission denied)", "fix the permissions of the file and its folders") from None
    except OSError as e:
        raise VideoError(where, f"cannot be accessed ({e.strerror})", "check the path and the storage it lives on") from e
    if stat.S_ISDIR(st.st_mode):
        raise VideoError(where, "is a directory, not a video file", "pass the path of a video file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(where, "is not a regular file", "pass the path of a video file")
    if not os.access(abspath, os.R_OK):
        raise VideoError(where, "cannot be read (permission denied)", "fix the file's permissions")
    return abspath, st


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise VideoError(name, "not found on PATH (celmask decodes video with FFmpeg)", INSTALL_FIX)
    return found


@functools.lru_cache(maxsize=4)
def _ffmpeg_version(ffmpeg_bin: str) -> tuple[int, int]:
    out = subprocess.run([ffmpeg_bin, "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True).stdout
    m = re.match(r"ffmpeg version n?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)  # git builds: assume current


@functools.lru_cache(maxsize=4)
def _pixel_format_depths(ffprobe_bin: str) -> dict[str, int]:
    """Max component bit depth of every pixel format this FFmpeg knows."""
    out = subprocess.run(
        [ffprobe_bin, "-v", "error", "-show_pixel_formats", "-of", "json"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    ).stdout
    depths: dict[str, int] = {}
    try:
        for fmt in json.loads(out).get("pixel_formats", []):
            comps = [c.get("bit_depth", 0) for c in fmt.get("components", [])]
            if comps:
                depths[fmt["name"]] = max(comps)
    except (ValueError, KeyError):
        pass
    return depths


def _url(abspath: str) -> str:
    # "file:" so that names with ':' or a leading '-' are never read as protocols or options.
    return "file:" + abspath


# --------------------------------------------------------------------------- fingerprint


def fingerprint(path: str | os.PathLike) -> str:
    """Content fingerprint of a file, reading at most 16 MiB of it.

    Scheme ``b2s1`` (blake2b, 20-byte digest, personalised ``celmask-b2s1``):
    the file size as 8 little-endian bytes, then

    * files up to ``FINGERPRINT_SAMPLES * FINGERPRINT_CHUNK`` (16 MiB): every byte;
    * larger files: ``FINGERPRINT_SAMPLES`` (16) chunks of ``FINGERPRINT_CHUNK`` (1 MiB) at
      offsets ``i * (size - chunk) // 15`` for ``i = 0..15`` (so the first and the last MiB
      are always included), each preceded by its offset as 8 little-endian bytes.

    Identical bytes give an identical id; a different size, or any change inside a sampled
    chunk, gives a different id. A change only in the unsampled gaps of a large file is not
    seen: the id is a cheap content key for caching, not an integrity check.

    Returns ``"b2s1:" + 40 hex digits``. Raises :class:`VideoError` when the file is missing
    or unreadable.
    """
    abspath, st = _check_file(path)
    size = st.st_size
    h = hashlib.blake2b(digest_size=20, person=b"celmask-" + FINGERPRINT_SCHEME.encode())
    h.update(size.to_bytes(8, "little"))
    try:
        with open(abspath, "rb") as f:
            if size <= FINGERPRINT_SAMPLES * FINGERPRINT_CHUNK:
                while chunk := f.read(FINGERPRINT_CHUNK):
                    h.update(chunk)
            else:
                span = size - FINGERPRINT_CHUNK
                for i in range(FINGERPRINT_SAMPLES):
                    offset = i * span // (FINGERPRINT_SAMPLES - 1)
                    f.seek(offset)
                    h.update(offset.to_bytes(8, "little"))
                    h.update(f.read(FINGERPRINT_CHUNK))
    except OSError as e:
        raise VideoError(_where(path), f"cannot be read ({e.strerror})", "check the file and its storage") from e
    return f"{FINGERPRINT_SCHEME}:{h.hexdigest()}"


# --------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class _Probe:
    """probe() result plus what decoding needs; everything but the fingerprint."""

    where: str
    info: VideoInfo  # fingerprint field left empty
    url: str
    stream_index: int
    time_base: Fraction
    start_pts: int
    own_duration: bool  # duration is the video stream's own (not the whole file's)
    seekable: bool  # container has a keyframe-accurate seek index (MP4/MOV, Matroska)


_PROBE_CACHE: dict[str, tuple[tuple, _Probe]] = {}
_TIMES_CACHE: dict[str, tuple[tuple, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def _cache_get(cache: dict, abspath: str, key: tuple):
    with _CACHE_LOCK:
        hit = cache.get(abspath)
        return hit[1] if hit is not None and hit[0] == key else None


def _cache_put(cache: dict, abspath: str, key: tuple, value) -> None:
    with _CACHE_LOCK:
        cache.pop(abspath, None)
        cache[abspath] = (key, value)
        while len(cache) > _CACHE_SIZE:
            cache.pop(next(iter(cache)))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe the first video stream of ``path`` (cover pictures are skipped).

    Runs ffprobe three times (streams; the first ``HEAD_PACKETS`` packets; the packets of the
    last ``TAIL_SECONDS`` for MP4/MOV/MKV) and fingerprints the file. Results are cached
    per (device, inode, size, mtime).

    Raises :class:`VideoError` (one line: file, problem, fix) when the file is missing, a
    directory, empty, not a video (text, audio only, a still image), has a video stream with no
    frames, or is truncated/corrupt as far as the container shows; also when ffprobe is missing.
    """
    pr = _probe(path)
    return dataclasses.replace(pr.info, fingerprint=fingerprint(pr.info.path))


def _probe(path: str | os.PathLike) -> _Probe:
    abspath, st = _check_file(path)
    key = _stat_key(st)
    cached = _cache_get(_PROBE_CACHE, abspath, key)
    if cached is not None:
        return dataclasses.replace(cached, where=_where(path))
    pr = _probe_uncached(_where(path), abspath, st)
    _cache_put(_PROBE_CACHE, abspath, key, pr)
    return pr


def _ffprobe_json(where: str, url: str, args: list[str]) -> tuple[dict, str]:
    cmd = [_tool("ffprobe"), "-v", "error", "-hide_banner", *args, "-of", "json", url]
    try:
        cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise VideoError(
            where, f"ffprobe did not finish within {PROBE_TIMEOUT_S} s",
            "check that the file sits on a responsive disk (not a stalled network mount)",
        ) from None
    stderr = cp.stderr.decode("utf-8", "replace")
    if cp.returncode != 0:
        raise VideoError(where, *_describe_ffprobe_failure(stderr, url))
    try:
        return json.loads(cp.stdout.decode("utf-8", "replace") or "{}"), stderr
    except ValueError as e:
        raise VideoError(where, "ffprobe returned unreadable output", "re-encode the file with ffmpeg") from e


_CTX_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def _clean_messages(stderr: str) -> list[str]:
    msgs: list[str] = []
    for line in stderr.splitlines():
        line = _CTX_PREFIX.sub("", line.strip())
        line = re.sub(r"^\[(panic|fatal|error|warning|info)\]\s*", "", line)
        line = re.sub(r"^file:[^:]*: ", "", line)  # "file:/x.mp4: Invalid data ..."
        if line and line not in msgs:
            msgs.append(line)
    return msgs


def _starts_like_mov(url: str) -> bool:
    """Whether the file begins with an ISO-BMFF/QuickTime box (as every MP4/MOV does)."""
    try:
        with open(url.removeprefix("file:"), "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid")


def _describe_ffprobe_failure(stderr: str, url: str) -> tuple[str, str]:
    msgs = _clean_messages(stderr)
    detail = "; ".join(msgs[-3:]) or "no message"
    low = stderr.lower()
    if "moov atom not found" in low and _starts_like_mov(url):
        return (
            "is truncated or incomplete: its MP4 index (moov atom) is missing",
            "re-download or re-export the file; an MP4 cut off before its index was written cannot be decoded",
        )
    if "invalid data found when processing input" in low:
        return (
            f"is not a video FFmpeg can read ({detail})",
            "check that the path points at a complete video file (mp4, mkv, mov, webm, gif, ...)",
        )
    return (f"cannot be read by ffprobe ({detail})", "check that the file is a complete, supported video; re-encode it with ffmpeg if needed")


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _fraction(value) -> Fraction | None:
    try:
        f = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return f if f > 0 else None


def _hms_seconds(value) -> float | None:
    """Matroska's ``DURATION`` tag, ``HH:MM:SS.nnnnnnnnn``."""
    m = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(value).strip())
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _float_or_none(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _rotation_cw(stream: dict) -> int:
    """Clockwise rotation FFmpeg's autorotation applies, from the display matrix (or old ``rotate`` tag)."""
    for sd in stream.get("side_data_list", []) or []:
        if "rotation" in sd:
            ccw = _float_or_none(sd["rotation"])  # av_display_rotation_get(): counter-clockwise degrees
            if ccw is not None:
                return int(round(-ccw / 90.0)) * 90 % 360
    tag = _float_or_none((stream.get("tags") or {}).get("rotate"))  # FFmpeg < 5: clockwise degrees
    return int(round(tag / 90.0)) * 90 % 360 if tag is not None else 0


def _probe_uncached(where: str, abspath: str, st: os.stat_result) -> _Probe:
    if st.st_size == 0:
        raise VideoError(where, "file is empty (0 bytes)", "re-copy or re-download it; the transfer probably failed")
    url = _url(abspath)
    # One ffprobe run for streams, format and the first packets (each run costs ~0.1 s
    # of start-up); packets of all streams are interleaved, so read a few times more.
    data, _ = _ffprobe_json(
        where, url,
        ["-show_format", "-show_streams", "-read_intervals", f"%+#{3 * HEAD_PACKETS}",
         "-show_entries", "packet=stream_index,pts,dts,duration,flags"],
    )
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    format_name = str(fmt.get("format_name", ""))

    videos = [s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        kinds = sorted({f"{s.get('codec_type')}: {s.get('codec_name')}" for s in streams})
        if any(s.get("codec_type") == "video" for s in streams):
            problem = "has no video stream, only a cover picture"
        elif kinds:
            problem = f"has no video stream (only {', '.join(kinds)})"
        else:
            problem = "has no video stream"
        raise VideoError(where, problem, "pass a video file; celmask needs moving pictures")
    v = videos[0]
    codec = str(v.get("codec_name") or "unknown")
    if codec in _TEXT_ART_CODECS or format_name == "tty":
        raise VideoError(where, f"is a text file, not a video (FFmpeg would render it as {codec} text art)",
                         "pass a video file (mp4, mkv, mov, webm, animated gif, ...)")
    if format_name in ("image2", "image2pipe") or format_name.endswith("_pipe"):
        raise VideoError(where, f"is a still image ({codec}), not a video", "pass a video file (mp4, mkv, mov, webm, animated gif, ...)")

    index = int(v["index"])
    tb = _fraction(v.get("time_base")) or Fraction(1, 1000)

    # ---- first packets: empty streams, frame-rate regularity, edit-list discards
    packets = [p for p in data.get("packets") or [] if _int_or_none(p.get("stream_index")) == index][:HEAD_PACKETS]
    if not packets:
        raise VideoError(where, "has a video stream with no frames", "re-export the video; the stream is empty")
    if codec in _STILL_IMAGE_CODECS and len(packets) == 1:
        raise VideoError(where, f"is a single still image ({codec}), not a video", "pass a video file (mp4, mkv, mov, webm, animated gif, ...)")
    discarded = sum(1 for p in packets if "D" in str(p.get("flags", "")))
    kept = [p for p in packets if "D" not in str(p.get("flags", ""))]
    pts = sorted(x for x in (_int_or_none(p.get("pts")) for p in kept) if x is not None)
    dts = [x for x in (_int_or_none(p.get("dts")) for p in kept) if x is not None]
    if len(packets) >= HEAD_PACKETS and dts:  # later packets may still hold smaller pts: keep pts <= last dts
        pts = [x for x in pts if x <= max(dts)]
    deltas = np.diff(np.asarray(pts, dtype=np.int64)) if len(pts) >= 2 else np.zeros(0, np.int64)

    # ---- frame rate
    avg = _fraction(v.get("avg_frame_rate"))
    real = _fraction(v.get("r_frame_rate"))
    rate = avg or real
    if rate is None and deltas.size and np.median(deltas) > 0:
        rate = (1 / (Fraction(int(np.median(deltas))) * tb)).limit_denominator(100000)
    fps = float(rate) if rate else 0.0
    vfr = False
    if deltas.size >= 2:
        med = float(np.median(deltas))
        vfr = bool(np.any(np.abs(deltas - med) > max(1.5, 0.1 * med)))
    if not vfr and avg and real:
        ratio = float(real / avg)
        vfr = abs(ratio - 1) > 0.05 and abs(ratio - 2) > 0.05  # 2x: field rate of interlaced video

    # ---- duration, frame count, start
    tags = v.get("tags") or {}
    own = _float_or_none(v.get("duration"))
    if own is None:
        own = next((_hms_seconds(val) for k, val in tags.items() if k.upper().startswith("DURATION")), None)
    duration = own if own is not None else (_float_or_none(fmt.get("duration")) or 0.0)
    start_pts = _int_or_none(v.get("start_pts"))
    if start_pts is None:
        start_pts = int(round((_float_or_none(v.get("start_time")) or 0.0) / tb)) if tb else 0
    start_time = float(start_pts * tb)
    stated = _int_or_none(v.get("nb_frames"))
    if stated is None:
        stated = next((_int_or_none(val) for k, val in tags.items() if k.upper().startswith("NUMBER_OF_FRAMES")), None)
    estimate = int(round(duration * fps)) if duration > 0 and fps > 0 else None
    if stated is not None and stated > 0:
        stated -= discarded
    if stated is not None and stated > 0:
        frame_count = stated
        exact = estimate is None or abs(stated - estimate) <= max(1, 0.01 * estimate)
    else:
        frame_count, exact = (estimate if estimate is not None else len(kept)), False

    # ---- geometry
    rotation = _rotation_cw(v)
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise VideoError(where, "has a video stream without a frame size", "re-encode the file with ffmpeg")
    if rotation in (90, 270):
        width, height = height, width
    pix_fmt = str(v.get("pix_fmt") or "unknown")
    bit_depth = _pixel_format_depths(_tool("ffprobe")).get(pix_fmt) or _int_or_none(v.get("bits_per_raw_sample")) or 8

    info = VideoInfo(
        path=abspath, codec=codec, pix_fmt=pix_fmt, bit_depth=int(bit_depth), width=width, height=height,
        rotation=rotation, frame_rate=f"{rate.numerator}/{rate.denominator}" if rate else "0/1", fps=fps,
        variable_frame_rate=vfr, duration=float(duration), frame_count=int(frame_count), frame_count_exact=exact,
        start_time=start_time, has_audio=any(s.get("codec_type") == "audio" for s in streams),
        size_bytes=st.st_size, fingerprint="",
    )
    pr = _Probe(where=where, info=info, url=url, stream_index=index, time_base=tb, start_pts=start_pts, own_duration=own is not None,
                seekable=format_name.startswith(_MOV_OR_MKV))
    if own is not None and duration > TAIL_SECONDS and format_name.startswith(_MOV_OR_MKV):
        _check_tail(pr)
    return pr


def _check_tail(pr: _Probe) -> None:
    """Raise VideoError when the stream's packets stop well before the duration the container states.

    Catches e.g. a faststart MP4 cut in the middle: its index is intact (so ffprobe is happy)
    but the frames behind the cut are gone. Seeks through the index, so it reads one GOP or so.
    """
    info = pr.info
    seek_to = info.start_time + info.duration - TAIL_SECONDS
    pk, stderr = _ffprobe_json(
        pr.where, pr.url,
        ["-select_streams", str(pr.stream_index), "-read_intervals", f"{seek_to:.6f}%", "-show_entries", "packet=pts,duration"],
    )
    ends = []
    for p in pk.get("packets") or []:
        p_pts = _int_or_none(p.get("pts"))
        if p_pts is not None:
            ends.append(float((p_pts - pr.start_pts + (_int_or_none(p.get("duration")) or 0)) * pr.time_base))
    read_error = any(s in stderr.lower() for s in ("partial file", "ended prematurely", "i/o error", "truncat"))
    frame_s = 1.0 / info.fps if info.fps > 0 else 0.1
    tolerance = max(1.0, 5 * frame_s)
    if (ends and max(ends) < info.duration - tolerance) or (not ends and read_error):
        reached = f"{max(ends):.2f} s" if ends else "an earlier point"
        raise VideoError(
            pr.where,
            f"is truncated: the container says the video runs {info.duration:.2f} s "
            f"({info.frame_count} frames) but its data stops near {reached} ({info.size_bytes} bytes on disk)",
            "re-download or re-copy the file (an interrupted download, copy or recording)",
        )


# --------------------------------------------------------------------------- sizes


def output_size(info: VideoInfo, width: int | None, height: int | None) -> tuple[int, int]:
    """``(width, height)`` of frames :func:`iter_frames` will deliver.

    Width only: height keeps the display aspect (rounded, at least 1); height only: likewise
    for width; both: exactly that; neither: the native display size (after rotation).
    Sizes are in stored pixels: a non-square sample aspect ratio is not corrected.
    """
    for name, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, but got {value!r}")
    if width is not None and height is not None:
        return int(width), int(height)
    if width is not None:
        return int(width), max(1, int(math.floor(width * info.height / info.width + 0.5)))
    if height is not None:
        return max(1, int(math.floor(height * info.width / info.height + 0.5))), int(height)
    return info.width, info.height


# --------------------------------------------------------------------------- the ffmpeg process

_SHOWINFO = re.compile(rb"^\[Parsed_showinfo_\d+ @ [^\]]+\] (?:\[info\] )?(.*)$")
_SI_FRAME = re.compile(rb"^n:\s*(\d+) pts:\s*(\S+) ")
_SI_TB = re.compile(rb"^config in time_base: (\d+)/(\d+)")
_LOG_LINE = re.compile(rb"^(?:\[(?P<ctx>[^\]]+?) @ 0x[0-9a-f]+\] )?\[(?P<level>panic|fatal|error|warning|info|verbose|debug|trace)\] (?P<msg>.*)$")
_DAMAGE_WORDS = ("corrupt", "invalid", "error", "missing", "damaged", "partial", "truncat", "prematur", "conceal", "broken", "overread")
_BENIGN_CONTEXTS = ("swscaler", "graph", "auto_scale", "auto_scaler", "format", "buffersrc", "null", "rawvideo")


@dataclass
class _Record:
    """One frame as showinfo saw it, with the complaints logged since the previous frame."""

    pts: int | None
    messages: list[str]


PIPE_BYTES = 1 << 20
"""Size asked of the kernel for ffmpeg's stdout pipe. The default 64 KiB holds
about one small analysis frame, which makes ffmpeg and the analysis take turns;
1 MiB lets ffmpeg decode ahead on the other core (Linux only)."""


def _widen_pipe(pipe) -> None:
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


class _FFmpegRun:
    """One ffmpeg process: frames on stdout, showinfo + log lines on stderr (parsed by a thread)."""

    def __init__(self, cmd: list[str], codec: str, url: str) -> None:
        self.codec = codec.encode()
        self.url_prefix = url + ": "
        self.time_base: Fraction | None = None
        self.tail: deque[str] = deque(maxlen=12)  # last error-ish lines, for failure messages
        self.errors_seen = 0
        self.trailing: list[str] = []
        self.killed = False
        self.records: queue.Queue[_Record | None] = queue.Queue()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _widen_pipe(self.proc.stdout)
        self.thread = threading.Thread(target=self._read_stderr, name=f"celmask-video-stderr-{self.proc.pid}", daemon=True)
        self.thread.start()

    # -- stderr thread
    def _read_stderr(self) -> None:
        pending: list[str] = []
        try:
            for raw in self.proc.stderr:
                line = raw.rstrip(b"\r\n")
                si = _SHOWINFO.match(line)
                if si is not None:
                    body = si.group(1)
                    m = _SI_FRAME.match(body)
                    if m is not None:
                        pts = None if m.group(2) == b"NOPTS" else int(m.group(2))
                        self.records.put(_Record(pts, pending))
                        pending = []
                    elif (m := _SI_TB.match(body)) is not None and self.time_base is None:
                        self.time_base = Fraction(int(m.group(1)), int(m.group(2)))
                    continue
                msg = self._issue_text(line)
                if msg is not None and msg not in pending:
                    pending.append(msg)
        except (ValueError, OSError):  # pipe closed under us during shutdown
            pass
        finally:
            self.trailing = pending
            self.records.put(None)

    def _issue_text(self, line: bytes) -> str | None:
        m = _LOG_LINE.match(line)
        if m is None:
            return None
        level, ctx = m.group("level"), (m.group("ctx") or b"")
        text = m.group("msg").decode("utf-8", "replace").strip().removeprefix(self.url_prefix)
        low = text.lower()
        if not text or ctx.startswith(b"Parsed_") or ctx.startswith(_BENIGN_CONTEXTS_B) or low.startswith("last message repeated"):
            return None
        is_decoder = ctx == self.codec or ctx.startswith(self.codec) or ctx == b"NULL"
        if level in (b"panic", b"fatal", b"error"):
            self.errors_seen += 1
        elif level == b"warning":
            if not (is_decoder or any(w in low for w in _DAMAGE_WORDS)):
                return None
        elif level == b"info":
            if not (is_decoder and "conceal" in low):
                return None
        else:
            return None
        who = ctx.decode("utf-8", "replace")
        full = f"[{who}] {text}" if who else text
        self.tail.append(full)
        return full

    # -- main thread
    def frames(self, frame_bytes: int) -> Iterator[tuple[_Record, np.ndarray | None]]:
        """Yield (record, flat uint8 buffer or None) per frame until ffmpeg's output ends."""
        out = self.proc.stdout
        while True:
            buf = None
            if frame_bytes:
                buf = np.empty(frame_bytes, dtype=np.uint8)
                got = _read_into(out, memoryview(buf))
                if got == 0:
                    return
                if got < frame_bytes:
                    self.tail.append(f"ffmpeg output ended inside a frame ({got} of {frame_bytes} bytes)")
                    self.errors_seen += 1
                    return
            rec = self.records.get()
            if rec is None:
                if frame_bytes:  # pixels without a showinfo line: should not happen
                    self.tail.append("ffmpeg delivered a frame without timing information")
                    self.errors_seen += 1
                return
            yield rec, buf

    def finish(self) -> int:
        """Wait for a normal end; return ffmpeg's exit status."""
        rc = self.proc.wait()
        self.thread.join()
        return rc

    def close(self) -> None:
        """Stop ffmpeg if still running, reap it, join the reader thread. Idempotent."""
        if self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        self.proc.wait()
        self.thread.join(timeout=10)
        try:
            self.proc.stderr.close()
        except OSError:
            pass

    def failure_detail(self) -> str:
        return "; ".join(list(dict.fromkeys(self.tail))[-3:]) or "no message from ffmpeg"


_BENIGN_CONTEXTS_B = tuple(c.encode() for c in _BENIGN_CONTEXTS)


def _read_into(stream, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; return bytes read (less only at end of stream)."""
    total = 0
    n = len(view)
    while total < n:
        got = stream.readinto(view[total:])
        if not got:
            break
        total += got
    return total


LARGE_FRAME_PIXELS = 1280 * 720
"""From this many pixels per frame on, decoding dominates whatever consumes the frames."""


def decode_threads(pixels: int) -> int:
    """Decoder threads for ffmpeg (0: its own choice, every core). Small frames
    decode quickly and the consumer of the frames needs a core: on 2 cores one
    thread decodes and analyses 640x360 at 858 frames/s, ffmpeg's default frame
    threading 702, its threads fighting the consumer. Large frames are
    decode-bound: there every core decodes (HEVC 1440x1074: 7.4 s vs 9.0 s)."""
    if pixels >= LARGE_FRAME_PIXELS:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


def _command(pr: _Probe, *, size: tuple[int, int] | None, gray: bool, seek: float | None, deblock: bool = True) -> list[str]:
    """ffmpeg command: decode the stream, scale to ``size`` (None: no pixels, null output)."""
    ffmpeg_bin = _tool("ffmpeg")
    in_kwargs: dict = {}
    if seek is not None:
        # Seek to the keyframe at or before this absolute stream time; keep every frame after it
        # (frames before the wanted one are dropped by matching timestamps, not by ffmpeg).
        in_kwargs.update(ss=f"{seek:.6f}", seek_timestamp=1, noaccurate_seek=None)
    if size is None:
        in_kwargs["autorotate"] = 0  # timestamps only: rotating pixels would be wasted work
    if not deblock:
        in_kwargs["skip_loop_filter"] = "all"
    in_kwargs["threads"] = decode_threads(pr.info.width * pr.info.height)
    stream = ffmpeg.input(pr.url, **in_kwargs)[str(pr.stream_index)]
    pix_fmt = "gray" if gray else "rgb24"
    if size is not None:
        w, h = size
        shrink = w <= pr.info.width and h <= pr.info.height and (w, h) != (pr.info.width, pr.info.height)
        stream = stream.filter("scale", w, h, flags="area" if shrink else "bicubic").filter("format", pix_fmt)
    stream = stream.filter("showinfo", checksum=0)
    sync = {"fps_mode": "passthrough"} if _ffmpeg_version(ffmpeg_bin) >= (5, 1) else {"vsync": "passthrough"}
    if size is None:
        out = ffmpeg.output(stream, "-", format="null", an=None, sn=None, dn=None, **sync)
    else:
        out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt=pix_fmt, an=None, sn=None, dn=None, **sync)
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-copyts")
    return out.compile(cmd=ffmpeg_bin)


def _time_of(pr: _Probe, pts: int | None, tb: Fraction | None) -> float:
    """Seconds from the stream's start time. Same formula everywhere, so equal pts give equal floats."""
    if pts is None:
        return math.nan
    if tb is None or tb == pr.time_base:
        tb = pr.time_base
        return (pts - pr.start_pts) * tb.numerator / tb.denominator
    return float(pts * tb - pr.start_pts * pr.time_base)


def _frame_seconds(info: VideoInfo) -> float:
    return 1.0 / info.fps if info.fps > 0 else 0.04


def _raise_if_stopped_early(pr: _Probe, run: _FFmpegRun, rc: int, *, next_index: int, last_time: float | None,
                            delivered: int, target: int | None, times: np.ndarray | None) -> None:
    """After ffmpeg's output ended: raise VideoError if it failed or stopped before the end."""
    info, where = pr.info, pr.where
    at = f"frame {next_index}" + (f", after {last_time:.3f} s" if last_time is not None and math.isfinite(last_time) else "")
    if rc != 0 and not run.killed:
        raise VideoError(where, f"ffmpeg failed (exit status {rc}) at {at}: {run.failure_detail()}",
                         "check the file with `ffmpeg -v error -i FILE -f null -`; re-encode it if it is damaged")
    if delivered == 0 and next_index == 0:
        raise VideoError(where, f"no frame could be decoded ({run.failure_detail()})",
                         "the video stream is empty or damaged; re-encode or re-download the file")
    if times is not None and target is not None and next_index < target:
        raise VideoError(where, f"decoding stopped at {at}, before frame {target} of {len(times)}: {run.failure_detail()}",
                         "the file is truncated or damaged, or changed since its frame times were computed; "
                         "re-download or re-encode it")
    if times is None and run.errors_seen and last_time is not None and pr.own_duration and info.duration > 0:
        tolerance = max(0.5, 3 * _frame_seconds(info))
        if last_time + _frame_seconds(info) < info.duration - tolerance:
            raise VideoError(where,
                             f"decoding stopped at {at} of ~{info.frame_count} ({info.duration:.2f} s): {run.failure_detail()}",
                             "the file is truncated or damaged; re-download or re-encode it")


# --------------------------------------------------------------------------- frame_times


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation times of every frame, in seconds from the stream's start time.

    A decode without pixel output (``-f null``, showinfo timestamps), so ``len(result)`` is the
    true number of frames :func:`iter_frames` yields for the whole file. ``float64``, shape
    ``(n,)``, read-only (cached per device/inode/size/mtime; copy it to modify).

    Raises :class:`VideoError` on bad input or when decoding stops before the end of the stream.
    """
    pr = _probe(path)
    abspath, st = _check_file(path)
    key = _stat_key(st)
    cached = _cache_get(_TIMES_CACHE, abspath, key)
    if cached is not None:
        return cached
    run = _FFmpegRun(_command(pr, size=None, gray=False, seek=None), pr.info.codec, pr.url)
    out: list[float] = []
    try:
        for rec, _ in run.frames(0):
            out.append(_time_of(pr, rec.pts, run.time_base))
        rc = run.finish()
        _raise_if_stopped_early(pr, run, rc, next_index=len(out), last_time=out[-1] if out else None,
                                delivered=len(out), target=None, times=None)
    finally:
        run.close()
    times = np.asarray(out, dtype=np.float64)
    times.flags.writeable = False
    _cache_put(_TIMES_CACHE, abspath, key, times)
    return times


# --------------------------------------------------------------------------- iter_frames


class _IssueLog:
    """Default issue reporting: one warning per issue, up to MAX_LOGGED_ISSUES, then a summary."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None

    def __call__(self, issue: DecodeIssue) -> None:
        self.count += 1
        self.first = issue.index if self.first is None else self.first
        self.last = issue.index
        if self.count <= MAX_LOGGED_ISSUES:
            log.warning("%s: decode issue at frame %d (%.3f s): %s", self.where, issue.index, issue.time, issue.message)
        if self.count == MAX_LOGGED_ISSUES:
            log.warning("%s: more decode issues follow; only a summary will be logged", self.where)

    def summary(self) -> None:
        if self.count > MAX_LOGGED_ISSUES:
            log.warning("%s: %d decode issues in total, frames %s-%s", self.where, self.count, self.first, self.last)


class _Restart(Exception):
    """A seeked decode went wrong before yielding frame ``resume``: decode from the start instead."""

    def __init__(self, resume: int, why: str) -> None:
        super().__init__(why)
        self.resume = resume


def _join_messages(messages: list[str]) -> str:
    text = "; ".join(messages[:4]) + (f" (+{len(messages) - 4} more)" if len(messages) > 4 else "")
    return " ".join(text.split())


def _match(times: np.ndarray, t: float, expected: int) -> int | None:
    """Index of the frame time equal to ``t`` (the expected one first, for repeated timestamps)."""
    tol = 5e-5
    if expected < len(times) and abs(times[expected] - t) <= tol:
        return expected
    j = int(np.searchsorted(times, t))
    for k in (j, j - 1):
        if 0 <= k < len(times) and abs(times[k] - t) <= tol:
            return k
    return None


def iter_frames(
    path: str | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    gray: bool = False,
    start: int = 0,
    end: int | None = None,
    times: np.ndarray | None = None,
    on_issue: Callable[[DecodeIssue], None] | None = None,
    deblock: bool = True,
) -> Iterator[Frame]:
    """Stream frames ``[start, end)`` of ``path`` as :class:`Frame` objects, decoded by one ffmpeg.

    Args:
        width, height: output size, see :func:`output_size` (scaling happens inside FFmpeg,
            ``flags=area`` when shrinking, after autorotation).
        gray: ``(H, W)`` uint8 luma instead of ``(H, W, 3)`` uint8 RGB.
        start, end: half-open range of presentation-order frame indices. ``start > 0`` seeks to
            the keyframe before it and identifies frames by matching their timestamps against
            ``times``, so the frames, indices and pixels equal those of a full decode.
        times: ``frame_times(path)``; computed (and cached) when needed and not given.
        on_issue: called with each :class:`DecodeIssue` before the frame it belongs to is
            yielded; by default each issue is logged as a warning on ``celmask.video``.
        deblock: False skips the in-loop deblocking filter of H.264/HEVC decoding: ~15%
            less decoding work, pixels slightly off a compliant decode. For low-res
            analysis passes (shots, holds), never for frames that get segmented.

    The file is probed before this returns, so bad input raises :class:`VideoError` here,
    before any frame. A decode that ends before the end of the stream (or before ``end``)
    raises :class:`VideoError` naming the frame where it stopped, after the frames before it.
    Closing the iterator early (``break``, ``close()``, garbage collection) kills ffmpeg and
    joins its reader thread.
    """
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start must be an int >= 0, but got {start!r}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, (int, np.integer))):
        raise ValueError(f"end must be an int or None, but got {end!r}")
    pr = _probe(path)
    size = output_size(pr.info, width, height)
    if times is not None:
        times = np.asarray(times, dtype=np.float64)
        if times.ndim != 1:
            raise ValueError(f"times must be a 1-D array of seconds, but got shape {times.shape}")
    if start > 0 and times is None:
        times = frame_times(path)
    if times is not None and start > len(times):
        raise ValueError(f"start={start} is past the last frame of {pr.where} ({len(times)} frames)")
    return _generate(pr, size, bool(gray), int(start), None if end is None else int(end), times, on_issue, deblock)


def _generate(pr: _Probe, size: tuple[int, int], gray: bool, start: int, end: int | None,
              times: np.ndarray | None, on_issue: Callable[[DecodeIssue], None] | None,
              deblock: bool = True) -> Iterator[Frame]:
    if end is not None and end <= start:
        return
    if times is not None and start >= len(times):
        return
    report = on_issue if on_issue is not None else _IssueLog(pr.where)
    try:
        seek = _seek_point(pr, start, times)
        if seek is None:
            yield from _attempt(pr, size, gray, start, end, times, report, None, deblock)
            return
        try:
            yield from _attempt(pr, size, gray, start, end, times, report, seek, deblock)
        except _Restart as r:
            log.info("%s: seeked decode for frames from %d: %s; decoding from the start instead", pr.where, r.resume, r)
            yield from _attempt(pr, size, gray, r.resume, end, times, report, None, deblock)
    finally:
        if isinstance(report, _IssueLog):
            report.summary()


def _seek_point(pr: _Probe, start: int, times: np.ndarray | None) -> float | None:
    """Absolute stream time for ``-ss``, or None to decode from the start.

    Only containers whose seek index marks keyframes (MP4/MOV, Matroska/WebM) are seeked:
    MPEG-TS/PS seek to arbitrary packets and GIF frames depend on their predecessors.
    """
    if start == 0 or times is None or not pr.seekable:
        return None
    if len(times) < 2 or not np.all(np.isfinite(times)) or not np.all(np.diff(times) > 0):
        return None  # repeated or missing timestamps: frames cannot be told apart by time
    if times[start] < SEEK_MIN_S:
        return None
    return float(times[start]) + pr.info.start_time - SEEK_MARGIN_S


def _attempt(pr: _Probe, size: tuple[int, int], gray: bool, start: int, end: int | None,
             times: np.ndarray | None, report: Callable[[DecodeIssue], None], seek: float | None,
             deblock: bool = True) -> Iterator[Frame]:
    """One ffmpeg run yielding frames [start, end).

    Without ``seek`` the n-th delivered frame is index n. With ``seek`` each frame is identified by
    matching its timestamp in ``times``; any surprise (landed after ``start``, a frame missing, the
    output ending early) raises :class:`_Restart` with the first index not yet yielded.
    """
    w, h = size
    shape = (h, w) if gray else (h, w, 3)
    run = _FFmpegRun(_command(pr, size=size, gray=gray, seek=seek, deblock=deblock), pr.info.codec, pr.url)
    matching = seek is not None
    cfr_step = 0.0 if pr.info.variable_frame_rate or pr.info.fps <= 0 else 1.0 / pr.info.fps
    try:
        ordinal = 0          # frames ffmpeg delivered in this run
        next_index = start   # index of the next frame to yield
        last_time: float | None = None
        unmatched = 0
        warned_times = False
        for rec, buf in run.frames(w * h * (1 if gray else 3)):
            t = _time_of(pr, rec.pts, run.time_base)
            if matching:
                j = _match(times, t, next_index)
                if j is None:
                    unmatched += 1
                    if unmatched > 50:
                        raise _Restart(next_index, "decoded timestamps do not match the frame times")
                    continue
                if j > next_index and j >= start:
                    raise _Restart(next_index, f"frame {next_index} did not come after the seek")
            else:
                j = ordinal
                if times is not None and not warned_times and j < len(times) and abs(times[j] - t) > 1e-4:
                    warned_times = True
                    log.warning("%s: frame %d is at %.6f s but the given times say %.6f s; were they computed "
                                "for this file?", pr.where, j, t, times[j])
            ordinal += 1
            if j < next_index:  # frames before start (or pre-roll after a seek)
                last_time = t
                continue
            messages = rec.messages
            if not matching and last_time is not None and cfr_step and math.isfinite(t - last_time):
                lost = int(round((t - last_time) / cfr_step)) - 1
                if lost > 0:  # a constant-rate stream skipped frames: packets that did not decode
                    messages = [*messages, f"{lost} frame(s) between {last_time:.3f} s and {t:.3f} s could not be "
                                           f"decoded and are missing (later indices shift by {lost})"]
            if messages:
                report(DecodeIssue(j, t, _join_messages(messages)))
            yield Frame(j, t, buf.reshape(shape))
            last_time, next_index = t, j + 1
            if end is not None and next_index >= end:
                return
        rc = run.finish()
        target = None
        if times is not None:
            target = len(times) if end is None else min(end, len(times))
        if matching and target is not None and next_index < target:
            raise _Restart(next_index, f"output ended at frame {next_index} of {target}")
        if run.trailing and (end is None or next_index < end):
            est = float(times[next_index]) if times is not None and next_index < len(times) else (
                (last_time + _frame_seconds(pr.info)) if last_time is not None else 0.0)
            report(DecodeIssue(next_index, est, _join_messages(run.trailing)))
        _raise_if_stopped_early(pr, run, rc, next_index=next_index, last_time=last_time,
                                delivered=ordinal, target=target, times=times)
    finally:
        run.close()


__all__ = [
    "DecodeIssue",
    "Frame",
    "VideoInfo",
    "fingerprint",
    "frame_times",
    "iter_frames",
    "output_size",
    "probe",
]


def _main() -> None:  # pragma: no cover - manual benchmark: python -m tasks.video FILE [WIDTH]
    import sys
    import time

    path = sys.argv[1]
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 160
    info = probe(path)
    print(info)
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, width=width))
    dt = time.perf_counter() - t0
    print(f"{n} frames at width {width} in {dt:.2f} s: {n / dt:.0f} fps")


if __name__ == "__main__":  # pragma: no cover
    _main()

