"""What Prefect costs an embedded episode run: ``celmask run`` against the same work
done by plain function calls, each in a fresh process, as a user would start them.

    .venv/bin/python bench/orchestration.py [--video out/demo/episode.mp4] [--workers 2] [--repeat 4]

The plain side plans the episode (probe, shot detection), segments every shot on a
pool of ``--workers`` threads, writes the manifest and finishes (episode table,
``_SUCCESS.json``, QC report) with the same functions the flows call; ``celmask run``
adds the embedded server, flow and task runs, artifacts and the progress listener.
Each run writes into a fresh directory, so neither hits a cache. The Prefect
database is created once before timing (a user's first run also migrates it: that
start-up is printed apart). Prints each pair's wall times and the difference as a
share of ``celmask run``'s wall time, the same for CPU time (the server's included),
and the share of the machine's time its hypervisor took away meanwhile (steal): on a
shared virtual machine the same run's time varies by tens of percent, so the pairs
alternate which side runs first and the summary is the median of the pairs, and
again of the pairs neither of whose runs lost 5% or more to steal.

Each run is also cut into three phases, which say where the difference comes from
and vary far less than the whole: until the first shot starts (imports, models, shot
detection; for ``celmask run`` also Prefect's import, the server and the flow run's
start), the shots, and from the end of the last shot to the process's exit. The
plain side reports its own times; ``celmask run``'s come from its shot task runs in
the Prefect database.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELMASK = str(Path(sys.executable).with_name("celmask"))
PHASES = ("until the first shot", "shots", "after the last shot")
QUIET_STEAL = 0.05
"""Pairs in which neither run lost this share of the machine to its hypervisor are
summarised apart too."""


def plain(video: Path, out: Path, workers: int) -> None:
    """The episode's work without Prefect."""
    from concurrent.futures import ThreadPoolExecutor

    from celmask.tasks.run.finish import finish_episode
    from celmask.tasks.run.plan import plan_episode
    from celmask.tasks.run.shot import run_shot
    from celmask.tasks.segment.config import SegmentConfig
    from celmask.tasks.segment.model_sets import preload_models

    episode_dir = out / video.stem
    plan, _ = plan_episode(video, episode_dir, {})
    preload_models(SegmentConfig())
    first = time.time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda shot: run_shot(video, shot, episode_dir, {}), plan.work_order))
    print(json.dumps({"first_shot": first, "last_shot": time.time()}))
    finish_episode(episode_dir, plan)


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    """The command's and every process it started (e.g. the server)."""
    steal: float
    """Share of the machine's CPU time its hypervisor gave to others meanwhile."""
    phases: tuple[float, float, float]
    """Seconds until the first shot started, from then until the last shot ended, and
    from then until the process exited."""


def _timed(cmd: list[str], env: dict[str, str], shots: Callable[[str], tuple[float, float]]) -> Timing:
    """Run ``cmd``; ``shots`` reads the epoch seconds its first shot started and its
    last shot ended, given its stdout."""
    start, epoch, cpu, steal = time.perf_counter(), time.time(), _children_cpu(), _steal_ticks()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    stolen = (_steal_ticks() - steal) / os.sysconf("SC_CLK_TCK")
    first, last = shots(done.stdout)
    return Timing(
        seconds,
        _children_cpu() - cpu,
        stolen / (seconds * (os.cpu_count() or 1)),
        (first - epoch, last - first, seconds - (last - epoch)),
    )


def _plain_shots(stdout: str) -> tuple[float, float]:
    times = json.loads(stdout.strip().splitlines()[-1])
    return times["first_shot"], times["last_shot"]


def _run_shots(database: Path, _stdout: str) -> tuple[float, float]:
    """The latest episode flow run's shot task runs, from the Prefect database (SQLite,
    times in UTC)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        (run_id,) = db.execute(
            "SELECT id FROM flow_run WHERE name LIKE 'ep-%' ORDER BY created DESC LIMIT 1"
        ).fetchone()
        first, last = db.execute(
            "SELECT min(start_time), max(end_time) FROM task_run WHERE flow_run_id = ? AND name LIKE 'shot-%'",
            (run_id,),
        ).fetchone()
    return tuple(datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() for t in (first, last))


def _steal_ticks() -> int:
    """Steal time of all CPUs so far (/proc/stat, Linux; 0 elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            return int(stat.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summary(what: str, shares: list[float], phases: list[list[float]]) -> None:
    print(
        f"{what}: Prefect adds {statistics.median(shares):+.1f}% of the wall time "
        f"(pairs from {min(shares):+.1f}% to {max(shares):+.1f}%); by phase, "
        + ", ".join(f"{name} {statistics.median(d):+.1f} s" for name, d in zip(PHASES, zip(*phases)))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--video", default="out/demo/episode.mp4", help="default: the demo episode (./dev.sh demo makes it)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4, help="pairs of runs (default 4)")
    parser.add_argument("--plain-into", help=argparse.SUPPRESS)  # the plain side, in its own process
    args = parser.parse_args()
    video = Path(args.video).resolve()
    if args.plain_into:
        sys.path.insert(0, str(ROOT))
        plain(video, Path(args.plain_into), args.workers)
        return
    if not video.is_file():
        sys.exit(f"{video}: not found; run ./dev.sh demo first or pass --video")
    root = Path(tempfile.mkdtemp(prefix="celmask-bench-orch-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(root / "prefect"), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from prefect.client.orchestration import get_client\n"
                "with get_client(sync_client=True) as c: c.hello()",
            ],
            env={**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60"},
            check=True,
        )
        print(
            f"{video.name}, {args.workers} workers; a new Prefect database's first start: "
            f"{time.perf_counter() - start:.1f} s (once per user)"
        )
        run_shots = functools.partial(_run_shots, root / "prefect" / "prefect.db")
        shares, phases, quiet = [], [], []
        for i in range(args.repeat):
            plain_cmd = [
                sys.executable,
                __file__,
                "--video",
                str(video),
                "--workers",
                str(args.workers),
                "--plain-into",
                str(root / f"plain-{i}"),
            ]
            run_cmd = [
                CELMASK,
                "run",
                str(video),
                "--out",
                str(root / f"run-{i}"),
                "--workers",
                str(args.workers),
                "--no-progress",
            ]
            if i % 2 == 0:
                a, b = _timed(plain_cmd, env, _plain_shots), _timed(run_cmd, env, run_shots)
            else:
                b, a = _timed(run_cmd, env, run_shots), _timed(plain_cmd, env, _plain_shots)
            shares.append(100 * (b.wall - a.wall) / b.wall)
            phases.append([y - x for x, y in zip(a.phases, b.phases)])
            print(
                f"pair {i} ({'plain' if i % 2 == 0 else 'celmask run'} first): plain functions {a.wall:.1f} s, "
                f"celmask run {b.wall:.1f} s: Prefect adds {b.wall - a.wall:+.1f} s = {shares[-1]:+.1f}% of the wall time; "
                f"CPU {a.cpu:.0f} s vs {b.cpu:.0f} s ({100 * (b.cpu - a.cpu) / b.cpu:+.1f}%, the server included); "
                f"steal {100 * a.steal:.0f}% / {100 * b.steal:.0f}%",
                flush=True,
            )
            print(
                "    " + "; ".join(f"{name} {x:.1f} s vs {y:.1f} s" for name, x, y in zip(PHASES, a.phases, b.phases)),
                flush=True,
            )
            quiet.append(max(a.steal, b.steal) < QUIET_STEAL)
        _summary(f"median over {len(shares)} pairs", shares, phases)
        if not all(quiet) and any(quiet):
            _summary(
                f"over the {sum(quiet)} pairs with less than {QUIET_STEAL:.0%} steal",
                [x for x, q in zip(shares, quiet) if q],
                [x for x, q in zip(phases, quiet) if q],
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
