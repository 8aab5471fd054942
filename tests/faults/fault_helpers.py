"""Helpers for the fault tests: `titan run` as a user runs it, interrupted in every way.

Runs go through the real CLI in a subprocess (``python -m titan.core.cli run``):
the local backend, the torchrun wrapper, the per-rank entry point, DCP.

Exactness (see tests/exact_runs.py): fp32 eager on CPU, no gradient clipping, a
constant LR after warmup, and a corpus with one training window per document, so
two ranks with ``local_batch_size=1`` compute the same steps as one process with
gradient accumulation over 2 micro-batches; that one process, run straight
through, is the reference every interrupted run is compared with bitwise.

The runs' command, environment and corpus are tests/exact_runs.py's (imported from there, not
re-exported); this module holds only what the fault tests add.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exact_runs import metrics_lines  # noqa: E402

REFERENCE_STEPS = 12


def wait_for_steps(proc: subprocess.Popen, dump: Path, steps: int, timeout: float = 300) -> None:
    """Until ``metrics.jsonl`` holds ``steps`` rows (the run logs every step), or fail if the run
    ended first or the deadline passed. A condition that stays true once reached (rows are only
    added), so a poll cannot miss it; it orders nothing finer than 'the run got this far'."""
    deadline = time.monotonic() + timeout
    while metrics_lines(dump) < steps:
        assert proc.poll() is None, proc.log.read_text()  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "training did not get that far"
        time.sleep(0.05)
