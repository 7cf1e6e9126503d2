"""Major 6 of issue 13: output that cannot be written. A file where OUT should be, a
read-only OUT and a full disk each give one line naming the path and the problem and
a non-zero exit, and never leave a complete-looking episode. The disk is a small
tmpfs (needs root, else skipped with the reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from celmask.tasks.manifest.layout import report_dir, success_path
from tests.faults.commands import run_args
from tests.support.finished import EPISODE, celmask, one_line_error

pytestmark = pytest.mark.faults


@pytest.fixture
def mount(tmp_path):
    """``mount(options)``: a fresh tmpfs with those options; unmounted after the test."""
    mounted = []

    def make(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_file_where_out_should_be(finished, tmp_path, env):
    out = tmp_path / "out"
    out.write_text("not a directory")
    done = celmask(env, *run_args(finished, out))
    assert done.returncode == 2
    line = one_line_error(done)
    assert str(out) in line and "a file stands where a directory should be" in line, line
    assert out.read_text() == "not a directory"


def test_a_read_only_out(finished, env, mount):
    out = mount("ro,size=1m")
    done = celmask(env, *run_args(finished, out))
    assert done.returncode == 2
    line = one_line_error(done)
    assert f"{out}/{EPISODE}" in line and "read-only file system" in line, line


@pytest.mark.slow
def test_a_full_disk_while_segmenting(finished, env, mount):
    out = mount("size=128k")  # the plan fits, the shots do not
    done = celmask(env, *run_args(finished, out))
    assert done.returncode in (1, 2)
    line = one_line_error(done)
    assert str(out) in line and ("no space left on the device" in line or "No space left" in line), line
    assert not success_path(out / EPISODE).exists()


def test_a_full_disk_while_the_report_is_written(out, env, mount):
    """The audit's case: the table and ``_SUCCESS.json`` fit, the report does not."""
    disk = mount("size=8m")
    shutil.copytree(out / EPISODE, disk / EPISODE)
    episode = disk / EPISODE
    shutil.rmtree(report_dir(episode))
    free = os.statvfs(disk)
    with open(disk / "filler", "wb") as fh:  # leave 64 KiB: less than the report, more than the rest
        fh.write(b"\0" * (free.f_bavail * free.f_frsize - 64 * 1024))
    done = celmask(env, "finalize", episode)
    assert done.returncode == 2
    line = one_line_error(done)
    assert str(episode) in line and "no space left on the device" in line, line
    assert not success_path(episode).exists()


def test_a_full_disk_during_an_export_leaves_no_empty_exports(out, env, mount):
    disk = mount("size=8m")
    shutil.copytree(out / EPISODE, disk / EPISODE)
    episode = disk / EPISODE
    free = os.statvfs(disk)
    with open(disk / "filler", "wb") as fh:  # room for a few of the PNGs, not all
        fh.write(b"\0" * (free.f_bavail * free.f_frsize - 16 * 1024))
    done = celmask(env, "export", episode, "--format", "png")
    assert done.returncode == 2
    line = one_line_error(done)
    assert str(episode) in line and "no space left on the device" in line, line
    assert not (episode / "_exports").exists()
