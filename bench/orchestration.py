"""What Prefect costs an embedded episode run: the ``episode`` flow (``celmask run``)
against the same work done by plain function calls, in the same process.

    .venv/bin/python bench/orchestration.py [--video out/demo/episode.mp4] [--workers 2] [--repeat 1]

Both sides plan the episode (probe, shot detection), segment every shot on a pool
of ``--workers`` threads, write the manifest, and finish (episode table,
``_SUCCESS.json``, QC report), each into its own fresh directory, so neither hits
the other's cache. The plain side runs first. Prints the wall time of each, the
difference as a share of the flow's wall time, and the embedded server's start-up
(the first API call of the process) apart from it, since a long-lived server on
a deployed system does not pay it per episode.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.embedded import local_prefect  # noqa: E402
from tasks.episode_finish import finish_episode  # noqa: E402
from tasks.episode_plan import plan_episode  # noqa: E402
from tasks.segment_config import SegmentConfig  # noqa: E402
from tasks.segment_models import build_models  # noqa: E402
from tasks.shot_run import run_shot  # noqa: E402


def plain(video: Path, out: Path, workers: int) -> float:
    """The episode's work without Prefect; wall seconds."""
    start = time.perf_counter()
    episode_dir = out / "bench"
    plan, _ = plan_episode(video, episode_dir, {})
    build_models(SegmentConfig())
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda shot: run_shot(video, shot, episode_dir, {}), plan.shots))
    finish_episode(episode_dir, plan)
    return time.perf_counter() - start


def server_startup() -> float:
    """Seconds the process's first API call takes (starts the embedded server)."""
    from prefect.client.orchestration import get_client

    start = time.perf_counter()
    with get_client(sync_client=True) as client:
        client.hello()
    return time.perf_counter() - start


def with_prefect(video: Path, out: Path, workers: int) -> float:
    from flows.episode import episode

    start = time.perf_counter()
    episode(str(video), str(out), {}, episode_id="bench", workers=workers)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="out/demo/episode.mp4", help="default: the demo episode (./dev.sh demo makes it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    video = Path(args.video).resolve()
    if not video.is_file():
        sys.exit(f"{video}: not found; run ./dev.sh demo first or pass --video")
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="celmask-bench-prefect-"))
    root = Path(tempfile.mkdtemp(prefix="celmask-bench-orch-"))
    try:
        with local_prefect():
            startup = server_startup()
            print(f"embedded server start-up (first API call): {startup:.1f} s")
            for i in range(args.repeat):
                a = plain(video, root / f"plain-{i}", args.workers)
                b = with_prefect(video, root / f"flow-{i}", args.workers)
                print(f"run {i}: plain functions {a:.1f} s, episode flow {b:.1f} s: Prefect adds {b - a:+.1f} s "
                      f"= {100 * (b - a) / b:+.1f}% of the flow's wall time "
                      f"({100 * (b - a + startup) / (b + startup):+.1f}% counting the server start-up)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
