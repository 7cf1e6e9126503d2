"""The embedded episode pipeline for real: ``celmask run``, ``rerun`` and ``finalize``
as subprocesses on a generated episode, with real ffmpeg, Prefect's embedded server
(one PREFECT_HOME for the whole module, so its database is migrated once) and the
built-in detector; plus unit tests of the progress state, injected faults and the
transient-error test.

The end-to-end tests share one clean run (``clean``) and copy its output where a run
must start from a finished episode. Each command starts Prefect's embedded server
(about 8 s, partly hidden behind loading models and detecting shots); the whole module
takes about four minutes on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from celmask.flows import progress
from celmask.flows.progress import EpisodeProgress
from celmask.tasks.core.errors import CelmaskError, ShotsFailed, TransientError, VideoError, is_transient
from celmask.tasks.manifest.schema import read_episode_table, read_shot_meta
from celmask.tasks.run.shot import Faults
from tests.support.prefect_server import command_env

CELMASK = str(Path(sys.executable).with_name("celmask"))
SETTINGS = ("--set", "work_size=480")
"""Small frames: the episode's 192 frames segment in seconds."""
SEED, DURATION = 2, 8.0
"""Seed 2 at 8 s: three shots (41, 87 and 64 frames), 66 unique drawings."""
EPISODE = "episode"
"""The episode id: the generated video's stem."""


@dataclass
class Run:
    done: subprocess.CompletedProcess
    out: Path
    seconds: float

    @property
    def episode(self) -> Path:
        return self.out / EPISODE

    def check(self, code: int = 0) -> Run:
        assert self.done.returncode == code, (
            f"exit {self.done.returncode}\n{self.done.stdout}\n{self.done.stderr[-4000:]}"
        )
        return self


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Every command's environment: one fresh PREFECT_HOME per module (command_env)."""
    return command_env(tmp_path_factory.mktemp("prefect_home"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from celmask.tasks.synth import generate_episode

    out = tmp_path_factory.mktemp("synth")
    generate_episode(out, seed=SEED, duration=DURATION)
    return out / "episode.mp4"


def celmask(env: dict[str, str], *args: str | Path, out: Path | None = None, timeout: float = 300) -> Run:
    start = time.monotonic()
    done = subprocess.run(
        [CELMASK, *map(str, args)], env=env, check=False, capture_output=True, text=True, timeout=timeout
    )
    return Run(done, out or Path(), time.monotonic() - start)


def run(env: dict[str, str], video: Path, out: Path, *args: str) -> Run:
    return celmask(env, "run", video, "--out", out, *SETTINGS, *args, out=out)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The command's one error line, last on stderr after any progress lines (indented),
    with no traceback or other message."""
    every = [line for line in done.stderr.splitlines() if line.strip()]
    lines = [line for line in every if not line.startswith("    ")]
    assert len(lines) == 1 and lines[0].startswith("celmask: error: "), done.stderr[-4000:]
    assert every[-1] == lines[0]
    return lines[0]


def true_shots(video: Path) -> int:
    """How many shots the generated episode was made of (its truth.json)."""
    return len(json.loads((video.parent / "truth.json").read_text())["shots"])


def plan_shots(episode: Path) -> list[int]:
    return [s["index"] for s in json.loads((episode / "_run" / "plan.json").read_text())["shots"]]


def shot_files(episode: Path) -> dict[str, Path]:
    """Every per-shot file a run writes: the plan, the summaries and the shot parquets."""
    files = [
        episode / "_run" / "plan.json",
        *(episode / "_run").glob("shot_*.json"),
        *(episode / "shots").glob("*.parquet"),
    ]
    return {str(p.relative_to(episode)): p for p in sorted(files)}


def snapshot(episode: Path) -> dict[str, tuple[bytes, int]]:
    return {name: (p.read_bytes(), p.stat().st_mtime_ns) for name, p in shot_files(episode).items()}


@pytest.fixture(scope="module")
def clean(env, video, tmp_path_factory) -> Run:
    """One clean run of the episode (the first command also migrates Prefect's database)."""
    return run(env, video, tmp_path_factory.mktemp("clean"))


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_run_writes_every_shot_the_table_success_and_report(clean, env):
    clean.check(0)
    episode = clean.episode
    report = episode / "_report" / "index.html"
    lines = clean.done.stdout.strip().splitlines()
    assert str(report) in lines[0]  # where to look, before any work
    assert lines[-1] == f"report: {report}"
    assert "(0 shots already done); _SUCCESS.json written" in lines[-2]

    shots = plan_shots(episode)
    assert shots == list(range(len(shots))) and 2 <= len(shots) <= 4
    for i in shots:
        meta = read_shot_meta(episode / "shots" / f"shot_{i:04d}.parquet")
        assert meta.episode_id == EPISODE and meta.shot.index == i
        assert (episode / "_run" / f"shot_{i:04d}.json").is_file()
    assert sorted(p.name for p in (episode / "shots").iterdir()) == [f"shot_{i:04d}.parquet" for i in shots]
    assert report.is_file()

    table = read_episode_table(episode)
    assert [s.shot.index for s in table] == shots and {s.status for s in table} == {"ok"}
    success = json.loads((episode / "_SUCCESS.json").read_text())
    assert success["shots"] == len(shots) and success["frames"] == round(DURATION * 24000 / 1001)
    assert success["rows"] == sum(s.rows for s in table) > 0

    done = celmask(env, "validate", clean.out).done
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("no problems")


@pytest.mark.slow
def test_a_real_output_tree_reads_as_one_table_in_pyarrow_pandas_polars_and_duckdb(clean, env, tmp_path):
    """What the README promises, on a real run's tree with its report and an export in it."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    clean.check(0)
    tree = tmp_path / "out"
    shutil.copytree(clean.out, tree)
    assert celmask(env, "export", tree, "--format", "palette").done.returncode == 0
    episode = tree / EPISODE
    assert (episode / "_report" / "index.html").is_file() and any((episode / "_exports" / "palette").iterdir())
    rows = sum(s.rows for s in read_episode_table(episode))
    assert pq.read_table(tree).num_rows == rows
    assert len(pd.read_parquet(tree)) == rows
    assert pl.scan_pyarrow_dataset(ds.dataset(tree)).select(pl.len()).collect().item() == rows
    assert pl.read_parquet(tree / "*" / "shots" / "*.parquet").height == rows
    assert duckdb.sql(f"select count(*) from read_parquet('{tree}/*/shots/*.parquet')").fetchall() == [(rows,)]
    assert set(pd.read_parquet(tree)["episode_id"]) == {EPISODE}


@pytest.mark.slow
def test_second_identical_run_does_no_model_work(clean, env, video):
    clean.check(0)
    before = snapshot(clean.episode)
    again = run(env, video, clean.out).check(0)
    shots = len(plan_shots(clean.episode))
    assert f"({shots} shots already done)" in again.done.stdout
    after = snapshot(clean.episode)
    assert after.keys() == before.keys() and len(after) == 2 * shots + 1
    for name in before:
        assert after[name][0] == before[name][0], f"{name} changed"
        assert after[name][1] == before[name][1], f"{name} was rewritten"


@pytest.fixture(scope="module")
def changed(clean, env, video, tmp_path_factory) -> Run:
    """A copy of the clean episode run again with another refiner, shot 0 failing
    transiently on its first attempt: one command tests both the cache key and the
    retry (the retry waits 6-15 s, celmask.flows.episode.SHOT_RETRY_DELAYS[0] jittered)."""
    clean.check(0)
    out = tmp_path_factory.mktemp("changed")
    shutil.copytree(clean.out, out, dirs_exist_ok=True)
    return run(env, video, out, "--set", "refiner=none", "--fail-shots", "0", "--fail-transient")


@pytest.mark.slow
def test_changed_setting_recomputes_every_shot(changed, clean):
    changed.check(0)
    assert "(0 shots already done)" in changed.done.stdout
    for i in plan_shots(clean.episode):
        name = f"shot_{i:04d}.parquet"
        old, new = (read_shot_meta(r.episode / "shots" / name) for r in (clean, changed))
        assert new.config_hash != old.config_hash
        assert json.loads(new.config_json)["refiner"] == "none" and json.loads(old.config_json)["refiner"] == "pieces"
    masks = [
        pq.read_table(r.episode / "shots" / "shot_0001.parquet", columns=["mask_rle"]).column(0).to_pylist()
        for r in (clean, changed)
    ]
    assert masks[0] != masks[1]  # the refiner shapes the masks


@pytest.mark.slow
def test_transient_fault_is_retried_and_the_run_succeeds(changed):
    changed.check(0)
    assert "Traceback" not in changed.done.stderr and "error" not in changed.done.stderr.lower(), changed.done.stderr
    assert (changed.episode / "_SUCCESS.json").is_file()
    assert [s.status for s in read_episode_table(changed.episode)] == ["ok"] * len(plan_shots(changed.episode))


@pytest.mark.slow
def test_failed_shot_then_rerun_gives_the_clean_run_bytes(clean, env, video, tmp_path_factory):
    clean.check(0)
    failed = run(env, video, tmp_path_factory.mktemp("fault"), "--fail-shots", "1").check(1)
    line = one_line_error(failed.done)
    episode = failed.episode
    shots = plan_shots(episode)
    assert len(shots) == true_shots(video)  # the shots the episode was made of
    assert f"shots [1] of {len(shots)} failed" in line and "injected failure" in line and "--shot N" in line
    assert not (episode / "_SUCCESS.json").exists()
    assert not (episode / "shots" / "shot_0001.parquet").exists()
    for i in shots:
        if i != 1:
            assert read_shot_meta(episode / "shots" / f"shot_{i:04d}.parquet").shot.index == i
    table = read_episode_table(episode)
    assert [s.status for s in table] == ["ok" if i != 1 else "failed" for i in shots]
    assert "injected failure" in table[1].error
    assert (episode / "_report" / "index.html").is_file()

    finalize = celmask(env, "finalize", episode)  # no Prefect: reads the episode back
    assert finalize.done.returncode == 1, finalize.done.stderr
    assert f"{len(shots) - 1} of {len(shots)} shots good; not complete (shots [1] failed)" in finalize.done.stdout

    rerun = celmask(env, "rerun", episode, "--shot", "1").check(0)
    assert f"{len(shots)} of {len(shots)} shots good; _SUCCESS.json written" in rerun.done.stdout
    assert (episode / "_SUCCESS.json").is_file()
    assert {s.status for s in read_episode_table(episode)} == {"ok"}
    for i in shots:  # same settings as the clean run: the same bytes, whichever run wrote them
        name = f"shots/shot_{i:04d}.parquet"
        assert (episode / name).read_bytes() == (clean.episode / name).read_bytes(), name
        summaries = [json.loads((e / "_run" / f"shot_{i:04d}.json").read_text()) for e in (episode, clean.episode)]
        for s in summaries:
            s.pop("seconds")
        assert summaries[0] == summaries[1]
    assert celmask(env, "finalize", episode).done.returncode == 0


@pytest.mark.slow
def test_finalize_after_the_source_video_was_replaced_draws_on_grey(clean, video, tmp_path):
    """A different file under the recorded name is not the episode's video: finishing
    still succeeds (the report draws without it) instead of failing on its fingerprint."""
    from celmask.tasks.outputs.report import write_report
    from celmask.tasks.run.plan import load_plan, recorded_video

    episode = tmp_path / EPISODE
    shutil.copytree(clean.check(0).episode, episode)
    moved = tmp_path / "episode.mp4"
    moved.write_bytes(video.read_bytes())
    plan_file = episode / "_run" / "plan.json"
    plan_file.write_text(plan_file.read_text().replace(json.dumps(str(video)), json.dumps(str(moved))))
    assert load_plan(episode).unchanged_video == str(moved)
    write_report(episode)  # the contact sheets come from the shot runs: none missing, no video needed
    with moved.open("ab") as f:  # still decodes, but it is another file now
        f.write(b"\0" * 4096)
    assert recorded_video(episode) is None
    finalize = celmask({**os.environ}, "finalize", episode)
    assert finalize.done.returncode == 0, finalize.done.stderr
    n = true_shots(video)
    assert f"{n} of {n} shots good; _SUCCESS.json written" in finalize.done.stdout
    assert (episode / "_report" / "index.html").is_file()


# --------------------------------------------------------------------------- bad input


def test_finalize_without_a_plan_is_one_line_exit_2(tmp_path, env):
    done = celmask(env, "finalize", tmp_path).done
    assert done.returncode == 2
    assert "has no _run/plan.json" in one_line_error(done)


@pytest.mark.slow
def test_rerun_of_a_shot_out_of_range_names_the_range(clean, env):
    clean.check(0)
    done = celmask(env, "rerun", clean.episode, "--shot", "99").done
    assert done.returncode == 2
    assert f"shot 99: episode {EPISODE} has shots 0..{len(plan_shots(clean.episode)) - 1}" in one_line_error(done)


# --------------------------------------------------------------------------- units


def test_episode_progress_rate_eta_and_description(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    p = EpisodeProgress("ep01", shots=4, frames=200, started=100.0)  # the field's default took the real clock
    assert (p.fraction, p.fps, p.eta) == (0.0, 0.0, None)
    assert p.describe() == "0/4 shots (0/200 frames); 0.0 frames/s"

    now[0] = 110.0
    p.shot_finished(50, ok=True, cached=True)  # a cached shot is no rate
    assert (p.fps, p.eta, p.cached) == (0.0, None, 1)
    p.shot_finished(40, ok=True, cached=False)
    assert p.fps == 4.0 and p.eta == 110 / 4.0
    p.shot_finished(30, ok=False, cached=False)  # nor is a failed one
    assert (p.done, p.failed, p.frames_done, p.frames_computed) == (3, 1, 120, 40)
    assert p.fraction == 0.75 and p.eta == 20.0
    assert p.describe() == "3/4 shots (120/200 frames), 1 cached, 1 failed; 4.0 frames/s, about 20 s left"
    assert EpisodeProgress("empty", shots=0, frames=0).fraction == 1.0


def test_work_order_is_longest_first_ties_by_index():
    from celmask.tasks.core.types import Shot
    from celmask.tasks.run.plan import EpisodePlan

    shots = tuple(Shot(i, a, b, a / 24, b / 24) for i, (a, b) in enumerate([(0, 10), (10, 40), (40, 50), (50, 70)]))
    plan = EpisodePlan("ep", "/v.mp4", "b2s1:0", 70, 24.0, (64, 64), shots, {})
    assert [s.index for s in plan.work_order] == [1, 3, 0, 2]


def test_faults_from_dict_and_check():
    assert Faults.from_dict(None) == Faults() == Faults.from_dict({})
    faults = Faults.from_dict({"shots": [1, "3"], "attempts": 2})
    assert faults == Faults(shots=(1, 3), attempts=2, transient=False)
    with pytest.raises(CelmaskError, match="unknown keys \\['shot'\\]"):
        Faults.from_dict({"shot": [1]})

    faults.check(0, 1)  # not a failing shot
    for attempt in (1, 2):
        with pytest.raises(CelmaskError, match="shot 3: injected failure") as raised:
            faults.check(3, attempt)
        assert type(raised.value) is CelmaskError and not is_transient(raised.value)
    faults.check(3, 3)  # past the failing attempts

    transient = Faults(shots=(0,), transient=True)
    with pytest.raises(TransientError, match="injected transient failure") as raised:
        transient.check(0, 1)
    assert is_transient(raised.value)
    transient.check(0, 2)


def test_an_injected_crash_ends_the_process_and_only_deployed_runs_take_it():
    from celmask.flows.episode import episode_flow
    from celmask.tasks.run.shot import CRASH_STATUS

    assert Faults.from_dict({"crash": [2]}) == Faults(crash=(2,))
    code = "from celmask.tasks.run.shot import Faults; Faults(crash=(2,)).check(1, 1); print('alive'); Faults(crash=(2,)).check(2, 1)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert (done.returncode, done.stdout.strip()) == (CRASH_STATUS, "alive"), done.stderr
    with pytest.raises(CelmaskError, match="deployed runs"):
        episode_flow.fn("/nowhere/ep.mp4", "/nowhere", faults={"crash": [0]})


def test_is_transient():
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name
        pass

    for error in (
        TransientError("gpu", "busy"),
        ConnectionError(),
        TimeoutError(),
        MemoryError(),
        OutOfMemoryError("x"),
        RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"),
    ):
        assert is_transient(error), error
    for error in (
        CelmaskError("x", "bad"),
        VideoError("v", "missing"),
        ShotsFailed("e", "shots [1] failed"),
        CelmaskError("x", "CUDA out of memory"),
        ValueError("bad frame"),
        RuntimeError("boom"),
    ):
        assert not is_transient(error), error


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_opens_with_the_report(env, tmp_path):
    """The README's first command: generate, segment end to end, say where the report is."""
    done = celmask(env, "demo", "--out", tmp_path / "demo", "--duration", "6", "--seed", "3").check().done
    report = tmp_path / "demo" / "manifest" / "demo" / "_report" / "index.html"
    assert done.stdout.splitlines()[0] == f"==> the QC report will be {report}"
    assert report.is_file() and (report.parents[1] / "_SUCCESS.json").is_file()
    score = next(line for line in done.stdout.splitlines() if "masks J&F" in line)
    # measured: shots F1 1.000, masks J&F 0.667 (2026-12-02); the margin is for other CPUs' arithmetic
    assert float(score.split("shots F1 ")[1].split()[0]) >= 0.95, score
    assert float(score.split("masks J&F ")[1].split()[0]) > 0.63, score
