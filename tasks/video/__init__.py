"""Streaming video I/O on FFmpeg: probe, content fingerprint, frame iterator.

Every other stage reads video through this module. Frames stream out of one
``ffmpeg`` process as raw RGB (or gray) at the size asked for, scaled inside
FFmpeg after its autorotation; memory stays at a few frames whatever the
episode length. Indices are presentation-order positions of the frames FFmpeg
decodes, and times come from the stream's own timestamps, so both are right
on variable-frame-rate files.

Usage::

    from celmask.tasks.video import probe, iter_frames, frame_times

    info = probe("ep01.mkv")                      # VideoError on bad input
    for frame in iter_frames("ep01.mkv", width=160, gray=True):
        ...                                       # frame.index, frame.time, frame.image (90, 160) uint8
    times = frame_times("ep01.mkv")               # float64 seconds, one per decoded frame
    shot = list(iter_frames("ep01.mkv", width=1024, start=1200, end=1320, times=times))

Problems with the input raise :class:`celmask.tasks.core.errors.VideoError` (one line: file,
problem, fix) before any frame is yielded wherever the problem is knowable up
front. Damage inside a stream is reported per frame as :class:`DecodeIssue`
(``on_issue`` callback, or a warning on the ``celmask.video`` logger), and a
decode that stops before the end of the stream raises ``VideoError`` naming the
frame where it stopped.

Frame numbering contract: index ``i`` is the ``i``-th frame FFmpeg delivers when
decoding the whole video stream from its start with every frame kept
(``-fps_mode passthrough``) -- the same numbering as ``ffprobe -show_frames``
and as reading frame by frame with OpenCV; ``len(frame_times(path))`` frames in all. On a
constant-rate stream, packets that cannot be decoded at all keep their places: index
``i`` stays the video's ``i``-th frame in presentation order, and each undecodable frame
is delivered with the picture before it and a :class:`DecodeIssue` saying so
(``decoding.missing_frames``; issue 13). On a variable-rate stream a gap cannot be told
from the timing, so such packets produce no frame and no index.
"""

from celmask.tasks.core.types import DecodeIssue, Frame
from celmask.tasks.video.decoding import frame_times, iter_frames, output_size
from celmask.tasks.video.probing import VideoInfo, fingerprint, probe

__all__ = ["DecodeIssue", "Frame", "VideoInfo", "fingerprint", "frame_times", "iter_frames", "output_size", "probe"]
