"""The QC report: flags on damaged shots, a page that renders in headless Chromium
with a row and a loaded contact sheet per shot, and the ``celmask report`` command.

The browser test drives Chromium over the DevTools protocol on a pipe (stdlib only)
and skips where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from celmask.flows.cli import main as celmask
from celmask.tasks.manifest.layout import CAST_NAME, EPISODE_TABLE_NAME, SUCCESS_NAME, TRACKS_NAME
from celmask.tasks.manifest.read import iter_shots
from celmask.tasks.manifest.schema import Keyframe, ShotSummary, read_episode_table
from celmask.tasks.manifest.write import write_episode_table
from celmask.tasks.outputs.exports import export
from celmask.tasks.outputs.report import LOW_SCORE, shot_flags, write_report

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))), None
)
"""The headless browser of the rendering test: the first of these names on PATH."""
BROWSER_TIMEOUT_S = 60
VIEWPORT = (1280, 900)
"""Tall enough for both shots of the test episode, so their lazy images load."""


@pytest.fixture
def episode(manifest_episode):
    return manifest_episode


@pytest.fixture
def copy(episode, tmp_path) -> Path:
    """A private copy of the episode directory, to damage or report on."""
    return shutil.copytree(episode.dir, tmp_path / "out" / "ep7")


# --------------------------------------------------------------------------- flags


def test_flags_name_what_is_worth_a_look(episode):
    summaries = read_episode_table(episode.dir)
    shot = list(iter_shots(episode.dir))[1]  # frames 80-95, four tracks
    rows = shot.rows
    track = max({r.track_id for r in rows}, key=lambda t: sum(r.track_id == t for r in rows))
    clean = [f for f in shot_flags(summaries[1], shot) if f.kind != "jump" and f.text.startswith(f"track {track}:")]
    assert clean == []  # the longest track as segmented (its own jumps may stay); then damaged here
    mine = [r for r in rows if r.track_id == track]
    gap = {r.frame_index for r in mine[2:4]}
    last = mine[-1].frame_index
    assert last == 95
    damaged = []
    for r in rows:
        if r.track_id == track and (r.frame_index in gap or r.frame_index >= 94):
            continue  # missing frames inside the track, and its end cut off two frames early
        if r.track_id == track and r.frame_index == mine[5].frame_index:
            r = r._replace(area=r.area * 3, rle=r.rle + "x")  # a mask three times the size for one frame
        damaged.append(r)
    weak = Keyframe(track, 88, 0.41, {"agreement": 0.1, "completeness": 0.3, "quality": 0.9})
    summary = dataclasses.replace(summaries[1], keyframes=(*summaries[1].keyframes, weak))
    flags = {
        f.kind: f.text
        for f in shot_flags(summary, dataclasses.replace(shot, rows=damaged))
        if f.text.startswith(f"track {track}:")
    }
    assert flags["gap"] == f"track {track}: missing in 2 frame(s) inside its span, first {min(gap)}-{max(gap)}"
    assert flags["vanish"].startswith(f"track {track}: vanishes after frame 93, 2 frame(s) before the shot ends")
    jumped = mine[5].frame_index  # the jump there and back: the worst is either
    assert re.match(
        rf"track {track}: mask jumps 2x, worst at frame ({jumped}|{jumped + 1}) \(area x3\.\d", flags["jump"]
    ), flags["jump"]
    assert flags["low-score"] == f"track {track}: keyframe 88 scores 0.41 (weak: agreement 0.10, completeness 0.30)"
    assert 0.41 < LOW_SCORE

    failed = ShotSummary.failed("ep7", summary.shot, "CUDA out of memory")
    assert [(f.kind, f.text) for f in shot_flags(failed, None)] == [("failed", "failed: CUDA out of memory")]
    empty = dataclasses.replace(summaries[1], rows=0, tracks=0, keyframes=())
    assert [f.kind for f in shot_flags(empty, None)] == ["empty"]


# --------------------------------------------------------------------------- the page


def test_report_without_video_shows_failed_shots_and_is_deterministic(copy, capsys):
    summaries = read_episode_table(copy)
    write_episode_table(copy, [summaries[0], ShotSummary.failed("ep7", summaries[1].shot, "CUDA <out> of memory")])
    (copy / "shots" / "shot_0001.parquet").unlink()
    index = write_report(copy)
    assert index == copy / "_report" / "index.html"
    page = index.read_text()
    assert (
        page.count('<section id="shot-') == 2 and page.count("<img ") - page.count('alt="character ') == 1
    )  # no video, no file: nothing to show for shot 1 (the cast strip's pictures aside)
    assert "failed: CUDA &lt;out&gt; of memory" in page and "<b>not complete</b>" not in page
    assert sorted(p.name for p in (copy / "_report" / "thumbs").glob("shot_*")) == ["shot_0000.jpg"]
    before = {p.name: p.read_bytes() for p in (copy / "_report").rglob("*") if p.is_file()}
    assert celmask(["report", str(copy)]) == 0
    assert capsys.readouterr().out == f"{index}\n"
    assert {p.name: p.read_bytes() for p in (copy / "_report").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        [SUCCESS_NAME, EPISODE_TABLE_NAME, TRACKS_NAME, CAST_NAME, "_run", "_report", "shots"]
    )  # nothing else touched (the cast and its signatures in _run/ are the finish step's)


def test_report_command_errors(episode, capsys):
    assert celmask(["report", str(episode.dir.parent)]) == 2
    assert "is an output tree and a report is per episode; pass one episode directory" in capsys.readouterr().err


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe: JSON messages,
    each ending in a NUL byte, on the browser's file descriptors 3 (in) and 4 (out)."""

    def __init__(self, binary: str, profile: Path) -> None:
        # the browser's pipe ends go above 9, so that putting them on 3 and 4 cannot clobber one with the other
        ours_in, write = os.pipe()
        read, ours_out = os.pipe()
        theirs_in, theirs_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (read, write))
        os.close(read)
        os.close(write)
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        trampoline = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execvp(sys.argv[3], sys.argv[3:])"
        self.process = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(theirs_in), str(theirs_out), *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(theirs_in, theirs_out),
        )
        os.close(theirs_in)
        os.close(theirs_out)
        self._out = os.fdopen(ours_out, "wb", buffering=0)
        self._in = os.fdopen(ours_in, "rb", buffering=0)
        self._buffer = b""
        self._id = 0
        self.session = ""

    def send(self, method: str, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params} | (
            {"sessionId": self.session} if self.session else {}
        )
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = self._in.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe (exit status {self.process.poll()})")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=VIEWPORT[0],
            height=VIEWPORT[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The JSON value of ``expression`` once the page has loaded (a Promise is awaited)."""
        loaded = (
            "new Promise(r => { const f = () => document.readyState === 'complete' ? r() : setTimeout(f, 20); f(); })"
        )
        result = self.send(
            "Runtime.evaluate", expression=f"{loaded}.then(() => {expression})", awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.session = ""
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
@pytest.mark.timeout(BROWSER_TIMEOUT_S)
def test_report_renders_in_chromium(episode, copy, tmp_path):
    export(copy, "preview", video=episode.video)
    index = write_report(copy, episode.video)
    summaries = read_episode_table(copy)
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.open(index.as_uri())
        browser.evaluate(
            "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
        )  # lazy ones load late
        page = browser.evaluate("""({
            shots: [...document.querySelectorAll('section.shot')].map(s => s.id),
            flagged: document.querySelectorAll('section.shot.flagged').length,
            images: [...document.images].map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
                                                   lazy: i.loading, width: i.naturalWidth, height: i.naturalHeight})),
            previews: [...document.querySelectorAll('a[href$=".mp4"]')].map(a => a.getAttribute('href')),
            keyframeRows: document.querySelectorAll('table.kf tr').length,
        })""")
        screenshot = tmp_path / "report.png"
        screenshot.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"]))
        visible_when_filtered = browser.evaluate("""(() => {
            document.getElementById('flagged-only').click();
            return [...document.querySelectorAll('section.shot')].filter(s => s.offsetParent !== null).length;
        })()""")
    finally:
        browser.close()
    assert page["shots"] == [f"shot-{s.shot.index}" for s in summaries]
    cast = [i for i in page["images"] if i["src"].startswith("thumbs/character_")]  # the cast strip, first
    sheets = page["images"][len(cast) :]
    assert cast and page["images"][: len(cast)] == cast and all(i["loaded"] for i in cast), cast
    assert [i["src"] for i in sheets] == [f"thumbs/shot_{s.shot.index:04d}.jpg" for s in summaries]
    assert all(i["loaded"] and i["lazy"] == "lazy" and i["height"] == 108 for i in sheets), sheets
    assert page["previews"] == [f"../_exports/preview/shot_{s.shot.index:04d}.mp4" for s in summaries]
    assert all((index.parent / href).is_file() for href in page["previews"])
    assert page["keyframeRows"] == len(summaries) + sum(len(s.keyframes) for s in summaries)
    assert visible_when_filtered == page["flagged"]
    with Image.open(screenshot) as image:
        assert (
            image.size == VIEWPORT and len(image.getcolors(1 << 16) or range(1 << 16)) > 100
        )  # a picture, not a blank page


def test_a_box_at_the_frames_edge_stays_inside_a_scaled_image():
    """A Looney Tunes GIF (450x338) once crashed the report: a box touching the bottom
    edge, scaled to a 108-pixel thumbnail by floats, ended a pixel past the image."""
    from celmask.tasks.outputs.preview import scaled_box

    for sh, sw in [(338, 450), (360, 640), (1074, 1440), (281, 500), (372, 500)]:
        for th in range(60, 130):
            w = round(th * sw / sh)
            assert scaled_box((0, 0, sw, sh), (sh, sw), (th, w)) == (0, 0, w, th)
            x0, y0, x1, y1 = scaled_box((sw - 3, sh - 1, 3, 1), (sh, sw), (th, w))  # a corner pixel
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= th
        assert scaled_box((100, 50, 10, 20), (sh, sw), (sh, sw)) == (100, 50, 110, 70)  # unscaled: unchanged
