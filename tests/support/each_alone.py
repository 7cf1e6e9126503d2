"""Run every selected test alone, each in a pytest process of its own, so that a test
that leans on another's fixtures, files or module state fails here (issue 20: every
test must pass alone as well as in any order).

    .venv/bin/python tests/support/each_alone.py -m "not slow"        # the fast subset, 2 at a time
    .venv/bin/python tests/support/each_alone.py tests/video -j 1     # one folder, one at a time
    .venv/bin/python tests/support/each_alone.py -m slow -j 1 -v      # the slow ones, a line per test

Prints a line per failure as it happens and a summary; exit 1 when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ALONE = ["-p", "no:cacheprovider", "-q", "--no-header", "-o", "addopts=--strict-markers"]
"""Each run: no cache shared between runs, pytest's output cut to the result."""


def collect(selection: list[str]) -> list[str]:
    """The node ids pytest selects with ``selection`` (paths, ``-m``, ``-k``)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=--strict-markers", *selection],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode not in (0, 5) or not ids:
        raise SystemExit(
            f"each_alone: pytest could not collect {selection}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return ids


def run_alone(node: str, timeout: float) -> tuple[str, int, float, str]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *ALONE, node],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, output = -1, f"timed out after {timeout:.0f} s"
    return node, code, time.monotonic() - started, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=2, help="tests at once (default 2)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one test may take (default 900)")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per test with its seconds")
    args, selection = parser.parse_known_args()
    nodes = collect(selection)
    print(f"each_alone: {len(nodes)} tests, {args.jobs} at a time", flush=True)
    started = time.monotonic()
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for n, (node, code, seconds, output) in enumerate(pool.map(lambda i: run_alone(i, args.timeout), nodes), 1):
            if code not in (0, 5):  # 5: deselected alone (e.g. a skip at collection)
                failed.append(node)
                tail = " | ".join(line for line in output.splitlines()[-6:] if line.strip())
                print(f"FAILED alone ({seconds:.0f} s): {node}: {tail}", flush=True)
            elif args.verbose:
                print(f"ok alone ({seconds:.0f} s): {node}", flush=True)
            if n % 50 == 0:
                print(
                    f"  {n} of {len(nodes)} run, {len(failed)} failed, {time.monotonic() - started:.0f} s", flush=True
                )
    print(f"each_alone: {len(nodes) - len(failed)} of {len(nodes)} passed alone in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
