"""The inbox of the ``nightly`` flow: which videos are there, which are done, copying
remote ones; and one nightly run end to end on a good and a corrupt episode."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest

from celmask.tasks.core.errors import CelmaskError, ShotsFailed
from celmask.tasks.manifest.layout import STAGING_NAME, SUCCESS_NAME
from celmask.tasks.run.inbox import fetch, find_episodes, record_source
from celmask.tasks.video import fingerprint


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def mark_done(out: Path, episode_id: str, video_fingerprint: str) -> Path:
    return write(out / episode_id / SUCCESS_NAME, json.dumps({"video_fingerprint": video_fingerprint}).encode())


@pytest.fixture
def inbox(tmp_path) -> Path:
    """Two "videos" (the inbox reads names and bytes only), and what is not an episode."""
    box = tmp_path / "inbox"
    write(box / "ep02.MKV", b"second episode")
    write(box / "ep01.mp4", b"first episode")
    write(box / ".ep03.mp4", b"hidden")
    write(box / "_ep04.mp4", b"upload in progress")
    write(box / "notes.txt", b"not a video")
    (box / "extras.mp4").mkdir()  # a folder, whatever its name
    return box


def test_lists_videos_by_name_and_skips_the_rest(inbox, tmp_path):
    items = find_episodes(str(inbox), tmp_path / "out")
    assert [i.episode_id for i in items] == ["ep01", "ep02"]
    assert [Path(i.source).name for i in items] == ["ep01.mp4", "ep02.MKV"]
    assert [i.size for i in items] == [13, 14]
    assert not any(i.done for i in items) and items[0].reason == "new"
    assert fetch(items[0], tmp_path / "staging") == inbox / "ep01.mp4"  # local: used where it is
    assert not (tmp_path / "staging").exists()


def test_done_when_success_matches_the_file_and_not_once_it_is_replaced(inbox, tmp_path):
    out = tmp_path / "out"
    mark_done(out, "ep01", fingerprint(inbox / "ep01.mp4"))
    (out / "ep02" / "shots").mkdir(parents=True)  # started, never completed
    first, second = find_episodes(str(inbox), out)
    assert first.done, first.reason
    assert not second.done and "not complete" in second.reason
    write(inbox / "ep01.mp4", b"first episode, re-encoded")  # same name, other content
    first = find_episodes(str(inbox), out)[0]
    assert not first.done and "replaced" in first.reason


def test_two_videos_with_one_episode_id_keep_the_first(inbox, tmp_path):
    write(inbox / "ep01.mov", b"the same episode id")
    items = find_episodes(str(inbox), tmp_path / "out")
    assert [(Path(i.source).name, bool(i.problem)) for i in items] == [
        ("ep01.mov", False),
        ("ep01.mp4", True),
        ("ep02.MKV", False),
    ]
    assert "ep01.mov" in items[1].problem


def test_missing_inbox_is_one_line(tmp_path):
    with pytest.raises(CelmaskError, match="inbox does not exist") as error:
        find_episodes(str(tmp_path / "nowhere"), tmp_path / "out")
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(CelmaskError, match="does not exist"):
        find_episodes(f"memory://{uuid.uuid4().hex}", tmp_path / "out")


def test_cli_reports_a_missing_inbox_before_starting_prefect(tmp_path, capsys):
    from celmask.flows.cli import main

    assert main(["nightly", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "inbox does not exist" in capsys.readouterr().err


@pytest.fixture
def memory_inbox():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/inbox-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/ep05.mp4", b"remote episode")
    fs.pipe(f"{root}/.partial.mp4", b"hidden")
    fs.pipe(f"{root}/readme.md", b"not a video")
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


def test_remote_inbox_is_listed_copied_once_and_a_replaced_file_runs_again(memory_inbox, tmp_path, monkeypatch):
    import fsspec

    url = memory_inbox
    out = tmp_path / "out"
    [item] = find_episodes(url, out)
    assert (item.episode_id, item.source, item.size, item.done) == ("ep05", f"{url}/ep05.mp4", 14, False)
    assert item.version.startswith("14 bytes, created ")
    staging = out / STAGING_NAME
    local = fetch(item, staging)
    assert local == staging / "ep05.mp4" and local.read_bytes() == b"remote episode"
    assert os.listdir(staging) == ["ep05.mp4"]  # no temporary left behind
    monkeypatch.setattr("fsspec.open", lambda *a, **k: pytest.fail("copied again"))
    assert fetch(item, staging) == local  # same size already there: not copied again
    mark_done(out, "ep05", fingerprint(local))
    assert find_episodes(url + "/", out)[0].done  # complete, no version recorded (made before records)
    record_source(item, out)
    assert find_episodes(url, out)[0].done
    fsspec.filesystem("memory").pipe(url.removeprefix("memory://") + "/ep05.mp4", b"replaced remote episode")
    [again] = find_episodes(url, out)
    assert not again.done and again.reason.startswith("replaced since") and "23 bytes" in again.reason


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def table_artifact(key: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [latest] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    data = latest.data
    return json.loads(data) if isinstance(data, str) else data


@pytest.mark.slow
def test_nightly_completes_the_good_episode_fails_the_corrupt_one_and_skips_done_ones(
    prefect_api, tmp_path, capsys, monkeypatch
):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from celmask.flows.cli import main
    from celmask.flows.embedded import QUIET_DEFAULTS
    from celmask.flows.nightly import nightly_flow
    from celmask.tasks.synth import generate_episode

    generate_episode(tmp_path / "gen", seed=5, duration=4)
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(tmp_path / "gen" / "episode.mp4", inbox / "ep01.mp4")
    write(inbox / "bad.mp4", os.urandom(40_000))
    config = {"work_size": 320, "shots.learned": "never"}  # shots.* reach each episode's shot detection

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        state = nightly_flow(str(inbox), str(out), config, workers=1, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ShotsFailed) and "1 of 2 episodes failed: bad " in str(error)
    success = out / "ep01" / SUCCESS_NAME
    assert json.loads(success.read_text())["video_fingerprint"] == fingerprint(inbox / "ep01.mp4")
    assert not (out / "bad" / SUCCESS_NAME).exists()
    assert json.loads((out / "ep01" / "_run" / "plan.json").read_text())["shot_config"]["learned"] == "never"
    rows = {r["episode"]: r for r in table_artifact("nightly-inbox")}
    assert (rows["ep01"]["status"], rows["bad"]["status"]) == ("complete", "failed")
    assert "not a video" in rows["bad"]["error"]

    # The command line, run again: ep01 is done, bad fails again, exit 1.
    for key in QUIET_DEFAULTS:  # local_prefect() sets these in os.environ; undone after the test
        monkeypatch.setenv(key, os.environ.get(key, QUIET_DEFAULTS[key]))
    levels = [(h, h.level) for h in logging.getLogger().handlers]
    mtime = success.stat().st_mtime_ns
    try:
        code = main(
            [
                "nightly",
                str(inbox),
                "--out",
                str(out),
                "--set",
                "work_size=320",
                "--set",
                "shots.learned=never",
                "--workers",
                "1",
            ]
        )
    finally:
        for handler, level in levels:
            handler.setLevel(level)
    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("==> 2 videos in") and "1 to segment" in lines[0] and "1 done before" in lines[0]
    assert "ep01: done-before" in lines and any(line.startswith("bad: failed: ") for line in lines)
    assert "celmask: error:" in captured.err and "bad" in captured.err
    assert success.stat().st_mtime_ns == mtime

    # Without the corrupt file the run succeeds and says what it skipped.
    (inbox / "bad.mp4").unlink()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        assert nightly_flow(str(inbox), str(out), config) == {"complete": [], "skipped": ["ep01"], "failed": {}}

    # A remote inbox: the copy of a complete episode is removed, a failed one's stays.
    import fsspec

    fs, remote = fsspec.filesystem("memory"), f"/inbox-{uuid.uuid4().hex}"
    fs.pipe(f"{remote}/ep02.mp4", (inbox / "ep01.mp4").read_bytes())
    fs.pipe(f"{remote}/bad2.mp4", os.urandom(40_000))
    try:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            state = nightly_flow(f"memory://{remote}", str(out), config, workers=1, return_state=True)
    finally:
        fs.rm(remote, recursive=True)
    assert state.is_failed() and (out / "ep02" / SUCCESS_NAME).is_file()
    assert os.listdir(out / STAGING_NAME) == ["bad2.mp4"]
