"""A night at studio scale: on a PostgreSQL-backed Prefect server, 2 CPU-pool workers
and 3 "GPU"-pool workers (CUDA_VISIBLE_DEVICES 0, 1, 2) run the nightly deployment over
an inbox of 8 short generated episodes and a corrupt file, with 2 slots of the ``gpu``
limit: the episodes run at once on the CPU pool and their 16 shots on the GPU pool,
so three shots are often ready for two slots. Every good episode completes with shot
files byte-identical to an embedded run's, the corrupt one fails with its reason, and
no more than 2 shots ever hold a slot at once.

Then a night of 3 of the episodes on a fresh studio, with faults: a GPU worker and its flow
run's processes killed while a shot holds a slot, the Prefect server killed and
restarted (same port, same database), PostgreSQL restarted. Every run ends (none stays
Pending or Running), every episode is complete or failed with its reason, what was
written is the embedded run's bytes, and a second night completes every episode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from celmask.tasks.manifest.layout import SUCCESS_NAME
from tests.support.finished import shot_bytes
from tests.support.postgres import MISSING, bindir
from tests.support.studio import CORRUPT, FINAL, GOOD, embedded_shots, make_inbox, most_at_once, running_studio

pytestmark = [
    pytest.mark.load,
    pytest.mark.slow,
    pytest.mark.timeout(3600),  # the module's set-up counts against its first test
    pytest.mark.skipif(bindir() is None, reason=MISSING),
]

GPU_SLOTS = 2
GPUS = ("0", "1", "2")
NIGHT_S = 1500
"""Longest a night may take here (a loaded 2-core machine; ~4 min idle)."""
SWEPT = ("no heartbeat", "Pending for")
"""What the crash sweeps say of a run they ended (flows/deploy.py, flows/watch.py)."""
SETTLE_S = 900
"""Longest the runs of a night with faults may take to end (the crash sweeps wait 2-5 min)."""
FAULTY = GOOD[:3]
"""The episodes of the night with faults: 6 shots for 3 GPU workers and 2 slots, so that
a shot holds a slot when its worker is killed and others go on (the whole inbox makes
the night, its sweeps and the second night several minutes longer)."""


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """The inbox and each good episode's shot files from an embedded run."""
    root = tmp_path_factory.mktemp("episodes")
    inbox = make_inbox(root)
    return inbox, embedded_shots(inbox, root / "embedded")


@pytest.fixture(scope="module")
def night(episodes, tmp_path_factory):
    """The studio after one night: (the studio, its nightly run, the night's seconds)."""
    inbox, _ = episodes
    with running_studio(tmp_path_factory.mktemp("load"), inbox, GPU_SLOTS) as studio:
        studio.start_workers(cpu=2, gpus=GPUS)
        started = time.monotonic()
        run = studio.night(timeout=NIGHT_S)
        seconds = time.monotonic() - started
        studio.stop_workers()
        yield studio, run, seconds


def _shot_count(reference: dict[str, dict[str, bytes]]) -> int:
    return sum(len(files) for files in reference.values())


def _part_of(inbox: Path, names: tuple[str, ...], root: Path) -> Path:
    """``root/inbox``: ``names``' videos and the corrupt one, linked from ``inbox``."""
    part = root / "inbox"
    part.mkdir()
    for name in (*names, CORRUPT):
        os.link(inbox / f"{name}.mp4", part / f"{name}.mp4")
    return part


def test_every_good_episode_completes_byte_identical_and_the_corrupt_one_fails(night, episodes):
    studio, run, seconds = night
    reference = episodes[1]
    assert run["state"] == "FAILED", (run, studio.worker_logs())
    assert f"1 of {len(GOOD) + 1} episodes failed: {CORRUPT} " in run["message"], run["message"]
    assert "not a video" in run["message"]
    for name in GOOD:
        assert (studio.out / name / SUCCESS_NAME).is_file(), (name, studio.worker_logs())
        assert shot_bytes(studio.out / name) == reference[name], name
    assert not (studio.out / CORRUPT / SUCCESS_NAME).exists()

    runs = studio.runs()
    episode_runs = {r["name"]: r for r in runs if r["name"].startswith("ep-") and "-shot-" not in r["name"]}
    assert {n: r["state"] for n, r in episode_runs.items()} == {
        **{f"ep-{name}": "COMPLETED" for name in GOOD},
        f"ep-{CORRUPT}": "FAILED",
    }
    assert "not a video" in episode_runs[f"ep-{CORRUPT}"]["message"]
    shots = [r for r in runs if "-shot-" in r["name"]]
    assert len(shots) == _shot_count(reference)  # one run per shot: none lost or redone
    assert {r["state"] for r in shots} == {"COMPLETED"}
    print(f"night of {len(GOOD)} episodes, {len(shots)} shots: {seconds:.0f} s")


def test_no_more_shots_hold_a_gpu_slot_than_the_limit(night, episodes):
    studio, _, _ = night
    held = studio.slot_log()
    assert len(held) == _shot_count(episodes[1])  # every shot took a slot and said when
    assert all(start < end for start, end, _ in held)
    assert most_at_once(held) <= GPU_SLOTS
    print(f"most shots holding a gpu slot at once: {most_at_once(held)} of {GPU_SLOTS}")


@pytest.fixture(scope="module")
def faulty_night(episodes, tmp_path_factory):
    """A night with a GPU worker lost mid-shot, the server and the database restarted,
    then a second night: (the studio, the first nightly run, every run once all ended,
    the second nightly run)."""
    root = tmp_path_factory.mktemp("faults")
    with running_studio(root, _part_of(episodes[0], FAULTY, root), GPU_SLOTS) as studio:
        studio.start_workers(cpu=2, gpus=GPUS)
        night_id = studio.submit_night()
        killed = studio.kill_gpu_worker_mid_shot()
        studio.restart_server()
        time.sleep(10)
        studio.restart_database()
        first = studio.wait(night_id, NIGHT_S)
        runs = studio.settled_runs(SETTLE_S)
        studio.start_workers(cpu=0, gpus=(killed.removeprefix("gpu-"),))  # the host is back
        second = studio.night(timeout=NIGHT_S)
        yield studio, first, runs, second


@pytest.mark.faults
def test_after_faults_every_run_ends_and_each_episode_is_complete_or_says_why(faulty_night, episodes):
    studio, first, runs, _ = faulty_night
    reference = episodes[1]
    assert first["state"] in FINAL, first
    night = [r for r in runs if r["name"].startswith(("ep-", "nightly-"))]
    assert len(night) > len(FAULTY) and all(r["state"] in FINAL for r in night)  # settled_runs waited for them
    # The lost worker's run was ended by a sweep, not left Running or Pending.
    swept = [r for r in night if r["state"] == "CRASHED" and any(w in (r["message"] or "") for w in SWEPT)]
    assert swept, [(r["name"], r["state"], r["message"]) for r in night if r["state"] != "COMPLETED"]
    episode_runs = {r["name"]: r for r in runs if r["name"].startswith("ep-") and "-shot-" not in r["name"]}
    for name in FAULTY:
        if not (studio.out / name / SUCCESS_NAME).is_file():
            failed = episode_runs[f"ep-{name}"]
            assert failed["state"] in {"FAILED", "CRASHED"} and failed["message"], failed
    # Nothing written is damaged: every shot file there is the embedded run's.
    for name in FAULTY:
        for file, data in shot_bytes(studio.out / name).items():
            assert data == reference[name][file], (name, file)
    print({r["name"]: (r["state"], r["message"]) for r in runs if r["state"] != "COMPLETED"})


@pytest.mark.faults
def test_after_faults_a_second_night_completes_every_episode_byte_identical(faulty_night, episodes):
    studio, _, _, second = faulty_night
    reference = episodes[1]
    assert second["state"] == "FAILED" and f"episodes failed: {CORRUPT} " in second["message"], second
    for name in FAULTY:
        assert (studio.out / name / SUCCESS_NAME).is_file(), (name, studio.worker_logs())
        assert shot_bytes(studio.out / name) == reference[name], name
