"""The ``celmask`` command as an operator runs it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from celmask.tasks.manifest.cast import read_tracks
from celmask.tasks.manifest.schema import read_shot_meta
from tests.support.enrolment import cast_folder

CELMASK = str(Path(sys.executable).with_name("celmask"))


def celmask(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CELMASK, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def episode(tmp_path_factory) -> Path:
    """A short generated episode (seed 3, 12 s) with its ground truth."""
    out = tmp_path_factory.mktemp("cli") / "ep"
    done = celmask("synth", out, "--seed", "3", "--duration", "12")
    assert done.returncode == 0, done.stderr
    assert "episode.mp4" in done.stdout
    return out


def test_probe_prints_stream_facts(episode):
    done = celmask("probe", episode / "episode.mp4", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["width"], info["height"], info["codec"], info["frame_rate"]) == (640, 360, "h264", "24000/1001")
    assert info["fingerprint"].startswith("b2s1:")
    table = celmask("probe", episode / "episode.mp4")
    assert table.returncode == 0 and "fingerprint" in table.stdout


@pytest.mark.slow
def test_shots_json_matches_the_documented_shape(episode):
    truth = json.loads((episode / "truth.json").read_text())
    done = celmask("shots", episode / "episode.mp4", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    shots = report["shots"]
    assert report["frame_count"] == truth["frame_count"]
    assert {"index", "start", "end", "start_time", "end_time", "transition"} <= set(shots[0])
    assert shots[0]["start"] == 0 and shots[-1]["end"] == truth["frame_count"]
    assert all(a["end"] == b["start"] for a, b in zip(shots, shots[1:]))
    assert shots[0]["transition"] == "start" and {s["transition"] for s in shots[1:]} <= {"cut", "fade", "dissolve"}
    assert 0 < report["unique_drawings"] < report["frame_count"]  # held frames were found
    # fusion is the default, and the record names the learned model by its weights' checksum
    assert report["config"]["learned"] == report["learned"]["mode"] == "auto"
    assert "@sha256:" in report["learned"]["model"] and report["learned"]["device"] in ("cpu", "cuda")
    rules = json.loads(celmask("shots", episode / "episode.mp4", "--json", "--learned", "never").stdout)
    assert rules["learned"] == {} and rules["config"]["learned"] == "never"
    # the detected boundaries are the true ones (this episode has no hard case)
    true = [s["start"] for s in truth["shots"][1:]]
    found = [s["start"] for s in shots[1:]]
    assert len(found) == len(true)
    for f, t, s in zip(found, true, truth["shots"][1:]):
        assert s["transition_start"] - 1 <= f <= max(s["transition_end"], t + 1)


@pytest.mark.slow
def test_shots_table_and_progress_bar(episode):
    done = celmask("shots", episode / "episode.mp4", "--progress")
    assert done.returncode == 0, done.stderr
    assert "transition" in done.stdout.splitlines()[0]
    assert "frame" in done.stderr  # the progress bar, forced on although stderr is no terminal
    quiet = celmask("shots", episode / "episode.mp4")
    assert quiet.stderr == ""  # no bar where nobody watches


BAD = [
    ("does_not_exist.mp4", "does not exist"),
    ("a_folder", "directory"),
    ("empty.mp4", "empty"),
    ("notes.txt", "not a video"),
    ("audio.m4a", "no video stream"),
    ("zero.mkv", "no frames"),
    ("cut_moov.mp4", "truncated"),
    ("cut_fast.mp4", "truncated"),
]


@pytest.mark.parametrize("command", ["probe", "shots", "segment", "run"])
@pytest.mark.parametrize(("name", "problem"), BAD)
def test_bad_input_is_one_line_and_exit_2(clip, command, name, problem, tmp_path):
    """Every command that takes a video, before any work: no output, no directory."""
    path = clip("cfr.mp4").parent / name if name == "does_not_exist.mp4" else clip(name)
    out = tmp_path / "out"
    done = celmask(command, path, *(["--out", out] if command == "run" else ["--json"]))
    assert done.returncode == 2
    assert done.stdout == "" and not out.exists()  # nothing written
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"celmask: error: {path}: ") and problem in lines[0]
    assert "Traceback" not in done.stderr


def test_corrupt_frame_in_the_middle_is_reported_with_its_position(clip):
    done = celmask("shots", clip("corrupt.mp4"), "--json")
    assert done.returncode == 0, done.stderr
    # 100 frames were encoded; the damaged packets decode to nothing but keep their
    # places (issue 13), and the warnings say where (the middle of the file, ~frame 50).
    assert json.loads(done.stdout)["frame_count"] == 100
    warnings = [line for line in done.stderr.splitlines() if "decode issue at frame" in line]
    assert warnings and all(line.startswith(f"celmask: WARNING: {clip('corrupt.mp4')}: ") for line in warnings)
    frame = int(warnings[0].split("decode issue at frame ")[1].split()[0])
    assert 40 <= frame <= 60


def test_bad_size_option_is_one_line(tmp_path):
    done = celmask("synth", tmp_path / "x", "--size", "big")
    assert done.returncode == 2 and done.stderr.startswith("celmask: error: --size:")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_segment_summarises_the_tracks_of_a_shot(episode):
    result = celmask("segment", episode / "episode.mp4", "--frames", "0:24", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 24 and report["drawings"] + report["model_calls_saved"] == 24
    assert report["models"]["detector"].startswith("yolo:detector.pt@sha256:")
    for track in report["tracks"].values():
        assert track["keyframes"] and set(track["keyframes"][0]["components"]) >= {"confidence", "quality", "agreement"}


def test_config_lists_every_key_and_rejects_unknown_ones():
    listed = celmask("config", "--set", "refiner=none", "--json")
    assert listed.returncode == 0
    config = json.loads(listed.stdout)["config"]
    assert config["refiner"] == "none" and config["detector.weights"] == "builtin"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for key in (
        "detector",
        "detector.weights",
        "detector.path",
        "propagator",
        "propagator.weights",
        "refiner",
        "refiner.checkpoint",
        "keyframe",
        "work_size",
    ):
        assert f"`{key}`" in readme, key  # the README's table documents the main keys
    bad = celmask("config", "--set", "refinr=none")
    assert bad.returncode == 2 and bad.stdout == "" and "did you mean refiner" in bad.stderr


def test_deploy_without_a_server_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    done = celmask("deploy", "--inbox", tmp_path, "--out", tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "PREFECT_API_URL" in done.stderr


def test_a_bad_shot_setting_stops_run_before_any_work(episode, tmp_path):
    done = celmask("run", episode / "episode.mp4", "--out", tmp_path / "out", "--set", "shots.learnd=never")
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown config key 'learnd'" in lines[0] and "shots.*" in lines[0], done.stderr


@pytest.mark.slow
def test_run_takes_shot_settings_and_records_them(episode, tmp_path):
    """``--set shots.*`` reaches shot detection (plan and _SUCCESS.json say so) and not the
    segmentation config; ``--cast`` names the characters and is kept for later finishes."""
    out = tmp_path / "out"
    cast = cast_folder(episode, episode / "episode.mp4", tmp_path / "cast")
    args = ("--set", "shots.learned=never", "--set", "shots.min_shot_frames=12", "--set", "work_size=320")
    done = celmask("run", episode / "episode.mp4", "--out", out, *args, "--cast", cast, "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    names = {t.character for t in read_tracks(out / "episode")} - {None}
    assert names and names <= {p.name for p in cast.iterdir()}
    assert (out / "episode" / "_run" / "enrolment.json").is_file()
    plan = json.loads((out / "episode" / "_run" / "plan.json").read_text())
    assert plan["shot_config"]["learned"] == "never" and plan["shot_config"]["min_shot_frames"] == 12
    assert plan["shot_learned"] == {}
    success = json.loads((out / "episode" / "_SUCCESS.json").read_text())
    assert success["shot_detection"]["config"]["learned"] == "never"
    meta = read_shot_meta(out / "episode" / "shots" / "shot_0000.parquet")
    assert "shots.learned" not in json.loads(meta.config_json) and json.loads(meta.config_json)["work_size"] == 320
