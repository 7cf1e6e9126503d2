"""Probing a video file: its facts (:class:`VideoInfo`), its content fingerprint, and
the checks that give bad input its one-line error before any frame is decoded.

Decoding (:mod:`.decoding`) builds on what probing knows, through the names here
without an underscore: :func:`check_file`, :func:`stat_key`, :func:`ffmpeg_tool`,
:func:`ffmpeg_version`, :func:`stream_facts` (:class:`StreamFacts`: the probe and what
decoding needs of the stream) and the per-file caches (:func:`cache_get`,
:func:`cache_put`, :data:`TIMES_CACHE`); the package exports only what users call."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from celmask.tasks.core.errors import VideoError

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


# --------------------------------------------------------------------------- files, tools


def _where(path: str | os.PathLike) -> str:
    return os.fspath(path)


def check_file(path: str | os.PathLike) -> tuple[str, os.stat_result]:
    """Return (absolute path, stat) of a readable, non-empty regular file, or raise VideoError."""
    where = _where(path)
    abspath = os.path.abspath(where)
    try:
        st = os.stat(abspath)
    except FileNotFoundError:
        raise VideoError(where, "file does not exist", "check the path (and that the volume is mounted)") from None
    except PermissionError:
        raise VideoError(
            where, "cannot be accessed (permission denied)", "fix the permissions of the file and its folders"
        ) from None
    except OSError as e:
        raise VideoError(
            where, f"cannot be accessed ({e.strerror})", "check the path and the storage it lives on"
        ) from e
    if stat.S_ISDIR(st.st_mode):
        raise VideoError(where, "is a directory, not a video file", "pass the path of a video file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(where, "is not a regular file", "pass the path of a video file")
    if not os.access(abspath, os.R_OK):
        raise VideoError(where, "cannot be read (permission denied)", "fix the file's permissions")
    return abspath, st


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def ffmpeg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise VideoError(name, "not found on PATH (celmask decodes video with FFmpeg)", INSTALL_FIX)
    return found


@functools.lru_cache(maxsize=4)
def ffmpeg_version(ffmpeg_bin: str) -> tuple[int, int]:
    out = subprocess.run([ffmpeg_bin, "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True).stdout
    m = re.match(r"ffmpeg version n?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)  # git builds: assume current


@functools.lru_cache(maxsize=4)
def _pixel_format_depths(ffprobe_bin: str) -> dict[str, int]:
    """Max component bit depth of every pixel format this FFmpeg knows."""
    out = subprocess.run(
        [ffprobe_bin, "-v", "error", "-show_pixel_formats", "-of", "json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
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
    abspath, st = check_file(path)
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
class StreamFacts:
    """probe() result plus what decoding needs; everything but the fingerprint."""

    where: str
    info: VideoInfo  # fingerprint field left empty
    url: str
    stream_index: int
    time_base: Fraction
    start_pts: int
    own_duration: bool  # duration is the video stream's own (not the whole file's)
    seekable: bool  # container has a keyframe-accurate seek index (MP4/MOV, Matroska)


_PROBE_CACHE: dict[str, tuple[tuple, StreamFacts]] = {}
TIMES_CACHE: dict[str, tuple[tuple, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


def forget_probes() -> None:
    """Drop what :func:`probe` and the frame-time reader remember, so that a benchmark
    times the first look at a file, as a user's first command pays it."""
    with _CACHE_LOCK:
        _PROBE_CACHE.clear()
        TIMES_CACHE.clear()


def cache_get(cache: dict, abspath: str, key: tuple):
    with _CACHE_LOCK:
        hit = cache.get(abspath)
        return hit[1] if hit is not None and hit[0] == key else None


def cache_put(cache: dict, abspath: str, key: tuple, value) -> None:
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
    pr = stream_facts(path)
    return dataclasses.replace(pr.info, fingerprint=fingerprint(pr.info.path))


def stream_facts(path: str | os.PathLike) -> StreamFacts:
    abspath, st = check_file(path)
    key = stat_key(st)
    cached = cache_get(_PROBE_CACHE, abspath, key)
    if cached is not None:
        return dataclasses.replace(cached, where=_where(path))
    pr = _probe_uncached(_where(path), abspath, st)
    cache_put(_PROBE_CACHE, abspath, key, pr)
    return pr


def _ffprobe_json(where: str, url: str, args: list[str]) -> tuple[dict, str]:
    cmd = [ffmpeg_tool("ffprobe"), "-v", "error", "-hide_banner", *args, "-of", "json", url]
    try:
        cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise VideoError(
            where,
            f"ffprobe did not finish within {PROBE_TIMEOUT_S} s",
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
    return (
        f"cannot be read by ffprobe ({detail})",
        "check that the file is a complete, supported video; re-encode it with ffmpeg if needed",
    )


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


def _probe_uncached(where: str, abspath: str, st: os.stat_result) -> StreamFacts:
    if st.st_size == 0:
        raise VideoError(where, "file is empty (0 bytes)", "re-copy or re-download it; the transfer probably failed")
    url = _url(abspath)
    # One ffprobe run for streams, format and the first packets (each run costs ~0.1 s
    # of start-up); packets of all streams are interleaved, so read a few times more.
    data, _ = _ffprobe_json(
        where,
        url,
        [
            "-show_format",
            "-show_streams",
            "-read_intervals",
            f"%+#{3 * HEAD_PACKETS}",
            "-show_entries",
            "packet=stream_index,pts,dts,duration,flags",
        ],
    )
    streams = data.get("streams") or []
    fmt = data.get("format") or {}
    format_name = str(fmt.get("format_name", ""))

    videos = [
        s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
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
        raise VideoError(
            where,
            f"is a text file, not a video (FFmpeg would render it as {codec} text art)",
            "pass a video file (mp4, mkv, mov, webm, animated gif, ...)",
        )
    if format_name in ("image2", "image2pipe") or format_name.endswith("_pipe"):
        raise VideoError(
            where,
            f"is a still image ({codec}), not a video",
            "pass a video file (mp4, mkv, mov, webm, animated gif, ...)",
        )

    index = int(v["index"])
    tb = _fraction(v.get("time_base")) or Fraction(1, 1000)

    # ---- first packets: empty streams, frame-rate regularity, edit-list discards
    packets = [p for p in data.get("packets") or [] if _int_or_none(p.get("stream_index")) == index][:HEAD_PACKETS]
    if not packets:
        raise VideoError(where, "has a video stream with no frames", "re-export the video; the stream is empty")
    if codec in _STILL_IMAGE_CODECS and len(packets) == 1:
        raise VideoError(
            where,
            f"is a single still image ({codec}), not a video",
            "pass a video file (mp4, mkv, mov, webm, animated gif, ...)",
        )
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
    bit_depth = (
        _pixel_format_depths(ffmpeg_tool("ffprobe")).get(pix_fmt) or _int_or_none(v.get("bits_per_raw_sample")) or 8
    )

    info = VideoInfo(
        path=abspath,
        codec=codec,
        pix_fmt=pix_fmt,
        bit_depth=int(bit_depth),
        width=width,
        height=height,
        rotation=rotation,
        frame_rate=f"{rate.numerator}/{rate.denominator}" if rate else "0/1",
        fps=fps,
        variable_frame_rate=vfr,
        duration=float(duration),
        frame_count=int(frame_count),
        frame_count_exact=exact,
        start_time=start_time,
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        size_bytes=st.st_size,
        fingerprint="",
    )
    pr = StreamFacts(
        where=where,
        info=info,
        url=url,
        stream_index=index,
        time_base=tb,
        start_pts=start_pts,
        own_duration=own is not None,
        seekable=format_name.startswith(_MOV_OR_MKV),
    )
    if own is not None and duration > TAIL_SECONDS and format_name.startswith(_MOV_OR_MKV):
        _check_tail(pr)
    return pr


def _check_tail(pr: StreamFacts) -> None:
    """Raise VideoError when the stream's packets stop well before the duration the container states.

    Catches e.g. a faststart MP4 cut in the middle: its index is intact (so ffprobe is happy)
    but the frames behind the cut are gone. Seeks through the index, so it reads one GOP or so.
    """
    info = pr.info
    seek_to = info.start_time + info.duration - TAIL_SECONDS
    pk, stderr = _ffprobe_json(
        pr.where,
        pr.url,
        [
            "-select_streams",
            str(pr.stream_index),
            "-read_intervals",
            f"{seek_to:.6f}%",
            "-show_entries",
            "packet=pts,duration",
        ],
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
