"""Major 10 of issue 13: two commands on one episode. The first holds an OS lock on
``OUT/<episode>/_run/lock``; a second ``run``, ``rerun``, ``finalize`` or ``correct`` refuses at once
with one line naming the first's pid (exit 2). The lock dies with its process: after a
SIGKILL the next run takes it and completes with the same bytes."""

from __future__ import annotations

import signal
import time

import pytest

from celmask.tasks.manifest.layout import success_path
from celmask.tasks.manifest.validate import validate
from tests.faults.commands import (
    SLOW_DETECTION,
    holds_lock,
    leftovers,
    none_left,
    recomputing,
    run_args,
    start,
    wait_for,
)
from tests.support.finished import EPISODE, celmask, one_line_error, shot_bytes

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_second_command_refuses_while_a_run_works_and_the_lock_dies_with_it(finished, out, env):
    episode = out / EPISODE
    first = start(env, *run_args(finished, out, *SLOW_DETECTION))  # recomputes both shots
    try:
        wait_for("the lock", holds_lock(episode, first.pid), first)
        wait_for("a recompute", recomputing(episode), first)
        correct = ["correct", episode, "--shot", "0", "--track", "0", "--delete-track"]
        for args in (run_args(finished, out), ["rerun", episode, "--shot", "0"], ["finalize", episode], correct):
            began = time.monotonic()
            done = celmask(env, *args)
            assert done.returncode == 2, done.stderr[-3000:]
            line = one_line_error(done)
            assert f"{episode}: in use by celmask run (pid {first.pid} " in line, line
            assert time.monotonic() - began < 60  # refused, not waited
        assert first.poll() is None  # the first is still working, undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert none_left(first.pid) == []

    done = celmask(env, *run_args(finished, out))  # the lock went with the killed run
    assert done.returncode == 0, done.stderr[-3000:]
    assert shot_bytes(episode) == finished.shots and success_path(episode).exists()
    assert leftovers(episode) == [] and validate(out).problems == []
