"""Shots per minute of a deployed night with 1, 2 and 3 GPU-pool workers, and what
Prefect costs each deployed shot flow run.

    .venv/bin/python bench/load.py [--gpu-workers 1 2 3] [--episodes 8]

The setup of the load test (``tests/support/studio.py``): PostgreSQL, a Prefect server
on it with auth, ``celmask deploy --gpu-slots 3``, 2 CPU-pool workers, the nightly
deployment over 8 generated 3 s episodes (16 shots, ``work_size=320``) and a corrupt
file; each night writes into a fresh OUT, so no shot is cached. Per night it prints
the wall time from submitting the nightly run to its end, shots per minute over it,
and over the shot phase alone (first slot taken to last slot given back), and the
CPU seconds the machine spent. Per shot flow run, from its state history and its slot
log line: queued (Scheduled until a worker takes it: a free worker and its 2 s
poll), start-up (Pending until Running: the worker spawns a process, which imports
Prefect, celmask and torch), in-run overhead (Running until the end, less the time
it held its GPU slot: probing, the cache check, model building, artifacts, state
changes), medians over the night's runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.studio import make_inbox, running_studio  # noqa: E402

SLOTS = 3
"""GPU slots, enough for every worker: the workers, not the limit, bound each night."""


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def _machine_cpu() -> float:
    """CPU seconds of every process on the machine so far (user + system, /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")


def _phases(run: dict, held: dict[str, float]) -> tuple[float, float, float] | None:
    """(queued, start-up, in-run overhead) seconds of one shot run."""
    times = {}
    for kind, stamp in run["states"]:
        times.setdefault(kind, _when(stamp))
    if not {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED"} <= set(times) or run["id"] not in held:
        return None
    queued = (times["PENDING"] - times["SCHEDULED"]).total_seconds()
    startup = (times["RUNNING"] - times["PENDING"]).total_seconds()
    overhead = (times["COMPLETED"] - times["RUNNING"]).total_seconds() - held[run["id"]]
    return queued, startup, overhead


def night(studio, gpus: int, out: Path) -> dict:
    studio.stop_workers()
    studio.start_workers(cpu=2, gpus=tuple(str(n) for n in range(gpus)))
    since = datetime.datetime.now(datetime.UTC)
    cpu, started = _machine_cpu(), time.monotonic()
    run = studio.night(out)
    seconds, cpu = time.monotonic() - started, _machine_cpu() - cpu
    shots = [
        r
        for r in studio.runs()
        if "-shot-" in r["name"] and r["expected_start"] and _when(r["expected_start"]) >= since
    ]
    lines = [(start, end, log) for start, end, log in studio.slot_log() if start >= since]
    held = {log: (end - start).total_seconds() for start, end, log in lines}
    phases = [p for p in (_phases(r, held) for r in shots) if p]
    span = (max(end for _, end, _ in lines) - min(start for start, _, _ in lines)).total_seconds()
    return {
        "gpu workers": gpus,
        "state": run["state"],
        "shots": len(shots),
        "completed": sum(r["state"] == "COMPLETED" for r in shots),
        "night s": round(seconds, 1),
        "shots/min": round(60 * len(shots) / seconds, 2),
        "shots/min, shot phase": round(60 * len(shots) / span, 2),
        "machine CPU s": round(cpu, 1),
        "median s queued": round(statistics.median(p[0] for p in phases), 1),
        "median s start-up": round(statistics.median(p[1] for p in phases), 1),
        "median s in-run overhead": round(statistics.median(p[2] for p in phases), 1),
        "median s holding the slot": round(statistics.median(held.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--episodes", type=int, default=8, help="of the 8 generated ones (two shots each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="celmask-load-") as tmp:
        root = Path(tmp)
        inbox = make_inbox(root, args.episodes)
        with running_studio(root, inbox, SLOTS) as studio:
            for gpus in args.gpu_workers:
                result = night(studio, gpus, root / f"out-{gpus}")
                print("  ".join(f"{k}: {v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
