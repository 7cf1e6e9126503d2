"""Decoding frames from one ``ffmpeg`` process, streamed: :func:`iter_frames`,
:func:`frame_times`, and the restarts and damage reports around them."""

from __future__ import annotations

import fcntl
import logging
import math
import os
import queue
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import ffmpeg  # ffmpeg-python: builds the ffmpeg command line
import numpy as np

from celmask.tasks.core.errors import VideoError
from celmask.tasks.core.types import DecodeIssue, Frame
from celmask.tasks.video.probing import (
    TIMES_CACHE,
    StreamFacts,
    VideoInfo,
    cache_get,
    cache_put,
    check_file,
    ffmpeg_tool,
    ffmpeg_version,
    stat_key,
    stream_facts,
)

log = logging.getLogger("celmask.video")

SEEK_MIN_S = 0.5
"""Ranges starting earlier than this many seconds into the stream are decoded from the start."""

SEEK_MARGIN_S = 0.05
"""``-ss`` goes this far before the wanted frame's time (FFmpeg then starts at the keyframe before)."""

MAX_LOGGED_ISSUES = 20
"""Default issue reporting logs this many warnings per decode, then one summary line."""

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
_LOG_LINE = re.compile(
    rb"^(?:\[(?P<ctx>[^\]]+?) @ 0x[0-9a-f]+\] )?\[(?P<level>panic|fatal|error|warning|info|verbose|debug|trace)\] (?P<msg>.*)$"
)
_DAMAGE_WORDS = (
    "corrupt",
    "invalid",
    "error",
    "missing",
    "damaged",
    "partial",
    "truncat",
    "prematur",
    "conceal",
    "broken",
    "overread",
)
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
        self.thread = threading.Thread(
            target=self._read_stderr, name=f"celmask-video-stderr-{self.proc.pid}", daemon=True
        )
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
        if (
            not text
            or ctx.startswith(b"Parsed_")
            or ctx.startswith(_BENIGN_CONTEXTS_B)
            or low.startswith("last message repeated")
        ):
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


def _command(
    pr: StreamFacts, *, size: tuple[int, int] | None, gray: bool, seek: float | None, deblock: bool = True
) -> list[str]:
    """ffmpeg command: decode the stream, scale to ``size`` (None: no pixels, null output)."""
    ffmpeg_bin = ffmpeg_tool("ffmpeg")
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
    sync = {"fps_mode": "passthrough"} if ffmpeg_version(ffmpeg_bin) >= (5, 1) else {"vsync": "passthrough"}
    if size is None:
        out = ffmpeg.output(stream, "-", format="null", an=None, sn=None, dn=None, **sync)
    else:
        out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt=pix_fmt, an=None, sn=None, dn=None, **sync)
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-copyts")
    return out.compile(cmd=ffmpeg_bin)


def _time_of(pr: StreamFacts, pts: int | None, tb: Fraction | None) -> float:
    """Seconds from the stream's start time. Same formula everywhere, so equal pts give equal floats."""
    if pts is None:
        return math.nan
    if tb is None or tb == pr.time_base:
        tb = pr.time_base
        return (pts - pr.start_pts) * tb.numerator / tb.denominator
    return float(pts * tb - pr.start_pts * pr.time_base)


def _frame_seconds(info: VideoInfo) -> float:
    return 1.0 / info.fps if info.fps > 0 else 0.04


def _raise_if_stopped_early(
    pr: StreamFacts,
    run: _FFmpegRun,
    rc: int,
    *,
    next_index: int,
    last_time: float | None,
    delivered: int,
    target: int | None,
    times: np.ndarray | None,
) -> None:
    """After ffmpeg's output ended: raise VideoError if it failed or stopped before the end."""
    info, where = pr.info, pr.where
    at = f"frame {next_index}" + (
        f", after {last_time:.3f} s" if last_time is not None and math.isfinite(last_time) else ""
    )
    if rc != 0 and not run.killed:
        raise VideoError(
            where,
            f"ffmpeg failed (exit status {rc}) at {at}: {run.failure_detail()}",
            "check the file with `ffmpeg -v error -i FILE -f null -`; re-encode it if it is damaged",
        )
    if delivered == 0 and next_index == 0:
        raise VideoError(
            where,
            f"no frame could be decoded ({run.failure_detail()})",
            "the video stream is empty or damaged; re-encode or re-download the file",
        )
    if times is not None and target is not None and next_index < target:
        raise VideoError(
            where,
            f"decoding stopped at {at}, before frame {target} of {len(times)}: {run.failure_detail()}",
            "the file is truncated or damaged, or changed since its frame times were computed; "
            "re-download or re-encode it",
        )
    if times is None and run.errors_seen and last_time is not None and pr.own_duration and info.duration > 0:
        tolerance = max(0.5, 3 * _frame_seconds(info))
        if last_time + _frame_seconds(info) < info.duration - tolerance:
            raise VideoError(
                where,
                f"decoding stopped at {at} of ~{info.frame_count} ({info.duration:.2f} s): {run.failure_detail()}",
                "the file is truncated or damaged; re-download or re-encode it",
            )


# --------------------------------------------------------------------------- frame_times


def lost_between(last_time: float | None, t: float, info: VideoInfo) -> int:
    """Frames a constant-rate stream skipped between two decoded frames: packets that
    did not decode at all (0 on a variable-rate stream, where gaps are the timing)."""
    step = _cfr_step(info)
    if last_time is None or not step or not math.isfinite(t - last_time):
        return 0
    return max(0, int(round((t - last_time) / step)) - 1)


def _cfr_step(info: VideoInfo) -> float:
    return 0.0 if info.variable_frame_rate or info.fps <= 0 else 1.0 / info.fps


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation times of every frame, in seconds from the stream's start time.

    A decode without pixel output (``-f null``, showinfo timestamps), so ``len(result)`` is the
    true number of frames :func:`iter_frames` yields for the whole file, frames that did not
    decode included (at the times a constant frame rate puts them, :func:`missing_frames`).
    ``float64``, shape ``(n,)``, read-only (cached per device/inode/size/mtime; copy it to modify).

    Raises :class:`VideoError` on bad input or when decoding stops before the end of the stream.
    """
    return _times(path)[0]


def missing_frames(path: str | os.PathLike) -> tuple[int, ...]:
    """Indices of the frames of a constant-rate stream whose packets did not decode at
    all: :func:`iter_frames` keeps their places with the picture before (damage)."""
    return _times(path)[1]


def _times(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, ...]]:
    pr = stream_facts(path)
    abspath, st = check_file(path)
    key = stat_key(st)
    cached = cache_get(TIMES_CACHE, abspath, key)
    if cached is not None:
        return cached
    run = _FFmpegRun(_command(pr, size=None, gray=False, seek=None), pr.info.codec, pr.url)
    out: list[float] = []
    missing: list[int] = []
    try:
        for rec, _ in run.frames(0):
            t = _time_of(pr, rec.pts, run.time_base)
            last = out[-1] if out else None
            for k in range(1, lost_between(last, t, pr.info) + 1):
                missing.append(len(out))
                out.append(last + k * _cfr_step(pr.info))
            out.append(t)
        rc = run.finish()
        _raise_if_stopped_early(
            pr,
            run,
            rc,
            next_index=len(out),
            last_time=out[-1] if out else None,
            delivered=len(out),
            target=None,
            times=None,
        )
    finally:
        run.close()
    times = np.asarray(out, dtype=np.float64)
    times.flags.writeable = False
    cache_put(TIMES_CACHE, abspath, key, (times, tuple(missing)))
    return times, tuple(missing)


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
    pr = stream_facts(path)
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


def _generate(
    pr: StreamFacts,
    size: tuple[int, int],
    gray: bool,
    start: int,
    end: int | None,
    times: np.ndarray | None,
    on_issue: Callable[[DecodeIssue], None] | None,
    deblock: bool = True,
) -> Iterator[Frame]:
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


def _seek_point(pr: StreamFacts, start: int, times: np.ndarray | None) -> float | None:
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


def _attempt(
    pr: StreamFacts,
    size: tuple[int, int],
    gray: bool,
    start: int,
    end: int | None,
    times: np.ndarray | None,
    report: Callable[[DecodeIssue], None],
    seek: float | None,
    deblock: bool = True,
) -> Iterator[Frame]:
    """One ffmpeg run yielding frames [start, end).

    Without ``seek`` the n-th delivered frame is index n. With ``seek`` each frame is identified by
    matching its timestamp in ``times``; any surprise (landed after ``start``, a frame missing, the
    output ending early) raises :class:`_Restart` with the first index not yet yielded.
    """
    w, h = size
    shape = (h, w) if gray else (h, w, 3)
    run = _FFmpegRun(_command(pr, size=size, gray=gray, seek=seek, deblock=deblock), pr.info.codec, pr.url)
    matching = seek is not None
    try:
        ordinal = 0  # frames ffmpeg delivered in this run
        lost = 0  # frames that did not decode before this one (their places are kept)
        next_index = start  # index of the next frame to yield
        last_time: float | None = None
        last_image: np.ndarray | None = None
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
                gap = lost_between(last_time, t, pr.info)
                for k in range(gap):  # undecodable frames keep their place, with the picture before
                    index = ordinal + lost + k
                    if start <= index and (end is None or index < end):
                        step_t = last_time + (k + 1) * _cfr_step(pr.info)
                        report(DecodeIssue(index, step_t, "could not be decoded; its place holds the frame before"))
                        yield Frame(
                            index, step_t, (last_image if last_image is not None else buf.reshape(shape)).copy()
                        )
                lost += gap
                if gap and end is not None and ordinal + lost >= end:
                    return
                j = ordinal + lost
                if times is not None and not warned_times and j < len(times) and abs(times[j] - t) > 1e-4:
                    warned_times = True
                    log.warning(
                        "%s: frame %d is at %.6f s but the given times say %.6f s; were they computed for this file?",
                        pr.where,
                        j,
                        t,
                        times[j],
                    )
            ordinal += 1
            if j < next_index:  # frames before start (or pre-roll after a seek)
                last_time, last_image = t, buf.reshape(shape)
                continue
            if rec.messages:
                report(DecodeIssue(j, t, _join_messages(rec.messages)))
            yield Frame(j, t, buf.reshape(shape))
            last_time, last_image, next_index = t, buf.reshape(shape), j + 1
            if end is not None and next_index >= end:
                return
        rc = run.finish()
        target = None
        if times is not None:
            target = len(times) if end is None else min(end, len(times))
        if matching and target is not None and next_index < target:
            raise _Restart(next_index, f"output ended at frame {next_index} of {target}")
        if run.trailing and (end is None or next_index < end):
            est = (
                float(times[next_index])
                if times is not None and next_index < len(times)
                else ((last_time + _frame_seconds(pr.info)) if last_time is not None else 0.0)
            )
            report(DecodeIssue(next_index, est, _join_messages(run.trailing)))
        _raise_if_stopped_early(
            pr, run, rc, next_index=next_index, last_time=last_time, delivered=ordinal, target=target, times=times
        )
    finally:
        run.close()


def _main() -> None:  # pragma: no cover - manual benchmark: python -m celmask.tasks.video.decoding FILE [WIDTH]
    import sys
    import time

    path = sys.argv[1]
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 160
    from celmask.tasks.video.probing import probe

    info = probe(path)
    print(info)
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, width=width))
    dt = time.perf_counter() - t0
    print(f"{n} frames at width {width} in {dt:.2f} s: {n / dt:.0f} fps")


if __name__ == "__main__":  # pragma: no cover
    _main()
