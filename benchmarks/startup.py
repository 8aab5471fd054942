"""Startup times: `titan --help`, `titan plugins list`, `titan models list`, time to the first step.

    uv run python benchmarks/startup.py            # median of 5 runs each
    uv run python benchmarks/startup.py --repeat 9

Whole processes, as a user waits for them (interpreter start included),
after one untimed run of each (a user's second start: files in the page
cache, ``.pyc`` files written). Also the CPU time (user + system) of each,
which a busy shared machine inflates far less than wall time.

Byte code matters more than anything titan does: without ``.pyc`` files
Python compiles every imported module's source at each start (about 4 s for
torch's imports). ``uv sync --compile-bytecode`` writes them for the
installed packages (``.ci/run`` does); the script prints whether Python
may also write them for titan's own sources (``PYTHONDONTWRITEBYTECODE``
forbids it on some machines, CI's among them). Time to first step: from starting
`titan run` (the default debug job, one process) to its first log line
(step 1 done), read from the `elapsed` of step 1 in metrics.jsonl plus the
wall time until training started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TITAN = [sys.executable, "-m", "titan.core.cli"]


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run of ``cmd``."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def first_step(steps: int = 2) -> tuple[float, float]:
    """(seconds from launch to the end of step 1, of which step 1 itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*TITAN, "run", f"--training.steps={steps}", f"--job.dump_folder={tmp}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.lstrip().startswith("step") and "1/" in line.split()[1]:
                break
        to_first = time.perf_counter() - t0
        proc.wait()
        rec = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[0])
        return to_first, rec["step_time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    writes = "no (PYTHONDONTWRITEBYTECODE)" if sys.dont_write_bytecode else "yes"
    print(f"python {sys.version.split()[0]}; .pyc written for titan's sources: {writes}")
    print(f"{'command':<28} {'wall s (median)':>16} {'CPU s (median)':>15}")
    for name, cmd in (
        ("titan --help", [*TITAN, "--help"]),
        ("titan plugins list", [*TITAN, "plugins", "list"]),
        ("titan models list", [*TITAN, "models", "list"]),
    ):
        timed(cmd)  # untimed: page cache and byte code, as for any second start
        runs = [timed(cmd) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{name:<28} {wall:>16.2f} {cpu:>15.2f}", flush=True)
    first_step()  # untimed, as above
    to_first, step1 = first_step()
    print(
        f"{'titan run: to first step':<28} {to_first:>16.2f} {'':>15}  (step 1 itself {step1:.2f} s)"
    )


if __name__ == "__main__":
    main()
