"""Small test clips made with ffmpeg's lavfi sources, built once per session on first use.

``get(name)`` returns the path of clip ``name`` (see ``_recipes``): well-formed
clips of every kind celmask must read (VFR, rotated, odd-sized, 10-bit, HEVC,
GIF ...) and every kind of bad input (truncated, corrupt, audio-only, empty ...).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def _truncate_copy(src: Path, dst: Path, fraction: float = 0.5) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


CORRUPT_BYTES = 4096


def _corrupt_middle(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid : mid + CORRUPT_BYTES] = (
        np.random.default_rng(1234).integers(0, 256, CORRUPT_BYTES, dtype=np.uint8).tobytes()
    )
    dst.write_bytes(bytes(data))


def _h264(src: str, out: Path, *extra: str) -> None:
    _ffmpeg("-f", "lavfi", "-i", src, *extra, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out))


VFR_PTS_MS = "if(lt(N,20),N*40,800+(N-20)*100+if(gt(N,35),37,0))"
"""Frame times of vfr.mp4 in ms: 20 frames at 25 fps, then 100 ms steps with a 137 ms gap."""


def _recipes(d: Path) -> dict:
    def cfr(p):  # 72 frames at 23.976 fps, one GOP, B-frames, with audio
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=24000/1001",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "3.003",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "250",
            "-bf",
            "3",
            "-c:a",
            "aac",
            str(p),
        )

    def gop(p):  # 200 frames, keyframe every 48, 3 B-frames: real seeks land mid-file
        _h264(
            "testsrc2=size=160x90:rate=25:duration=8",
            p,
            "-g",
            "48",
            "-keyint_min",
            "48",
            "-sc_threshold",
            "0",
            "-bf",
            "3",
        )

    def longgop(p):  # 300 frames, -g 250 -bf 3: keyframes at 0 and 250 only
        _h264("testsrc2=size=160x96:rate=25:duration=12", p, "-g", "250", "-bf", "3")

    def vfr(p):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=25:duration=2",
            "-vf",
            f"settb=1/1000,setpts='{VFR_PTS_MS}'",
            "-fps_mode",
            "passthrough",
            "-enc_time_base:v",
            "1/1000",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "2",
            "-g",
            "12",
            "-video_track_timescale",
            "1000",
            str(p),
        )

    def base(p):
        _h264("testsrc2=size=160x90:rate=25:duration=1", p)

    def rotated(tag):
        def make(p):
            _ffmpeg("-i", str(get("base.mp4")), "-c", "copy", "-metadata:s:v:0", f"rotate={tag}", str(p))

        return make

    def odd(p):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=322x242:rate=25:duration=1",
            "-vf",
            "format=yuv444p,crop=321:241:0:0",
            "-c:v",
            "ffv1",
            str(p),
        )

    def ten(p):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=128x72:rate=25:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p10le",
            str(p),
        )

    def hevc(p):
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=24:duration=3",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=24:bframes=3",
            "-pix_fmt",
            "yuv420p",
            str(p),
        )

    def gif(p):
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", str(p))

    def solid(p):  # exact colour (0x30, 0x80, 0xC0) kept losslessly in RGB
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "color=c=0x3080C0:size=64x48:rate=25:duration=0.4,format=bgr0",
            "-c:v",
            "ffv1",
            "-pix_fmt",
            "bgr0",
            str(p),
        )

    def audio(p):
        _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(p))

    def png(p):
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", str(p))

    def gif1(p):
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", str(p))

    def zero(p):  # a video track with no frames (next to an audio track)
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-f",
            "lavfi",
            "-i",
            "color=size=64x48:duration=1",
            "-map",
            "0",
            "-map",
            "1",
            "-frames:v",
            "0",
            "-c:v",
            "libx264",
            str(p),
        )

    def mp4_av(p):  # 100 frames + audio, moov at the end
        _ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(p),
        )

    def faststart(p):
        _ffmpeg("-i", str(get("av.mp4")), "-c", "copy", "-movflags", "+faststart", str(p))

    def uhd(p):  # 24 frames of 3840x2160: per-shot memory must stay at working resolution
        _h264("testsrc2=size=3840x2160:rate=24:duration=1", p, "-preset", "ultrafast")

    def corrupt_src(p):
        _h264("testsrc2=size=320x180:rate=25:duration=4", p, "-g", "50", "-bf", "3")

    return {
        "cfr.mp4": cfr,
        "gop.mp4": gop,
        "longgop.mp4": longgop,
        "vfr.mp4": vfr,
        "base.mp4": base,
        "rot_cw90.mp4": rotated(270),
        "rot_cw270.mp4": rotated(90),
        "odd.mkv": odd,
        "ten.mp4": ten,
        "hevc.mkv": hevc,
        "anim.gif": gif,
        "solid.mkv": solid,
        "audio.m4a": audio,
        "still.png": png,
        "still.gif": gif1,
        "zero.mkv": zero,
        "av.mp4": mp4_av,
        "fast.mp4": faststart,
        "corrupt_src.mp4": corrupt_src,
        "uhd.mp4": uhd,
        "ts.ts": lambda p: _ffmpeg("-i", str(get("gop.mp4")), "-c", "copy", "-f", "mpegts", str(p)),
        # stream copy cut at a non-keyframe: MP4 edit list hides the frames before 1.3 s
        "edit.mp4": lambda p: _ffmpeg("-ss", "1.3", "-i", str(get("gop.mp4")), "-c", "copy", "-t", "4", str(p)),
        "cut_moov.mp4": lambda p: _truncate_copy(get("av.mp4"), p),
        "cut_fast.mp4": lambda p: _truncate_copy(get("fast.mp4"), p),
        "corrupt.mp4": lambda p: _corrupt_middle(get("corrupt_src.mp4"), p),
        "notes.txt": lambda p: p.write_text("not a video, just some notes\n" * 20),
        "notes.mp4": lambda p: p.write_text("not a video, just some notes\n" * 20),
        "empty.mp4": lambda p: p.write_bytes(b""),
        "a_folder": lambda p: p.mkdir(),
    }


_CLIP_DIR: Path | None = None
_BUILT: dict[str, Path] = {}


def get(name: str) -> Path:
    """Path of test clip ``name``, built on first use in the session's clip folder."""
    assert _CLIP_DIR is not None
    if name not in _BUILT:
        path = _CLIP_DIR / name
        _recipes(_CLIP_DIR)[name](path)
        _BUILT[name] = path
    return _BUILT[name]


def use_directory(directory: Path) -> None:
    """Build clips into ``directory`` from now on (a session's temporary folder)."""
    global _CLIP_DIR
    _CLIP_DIR = directory
    _BUILT.clear()
