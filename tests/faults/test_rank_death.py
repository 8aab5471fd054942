"""A rank dies in a 2-rank run: the other does not hang; one line names the dead rank."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from fault_helpers import wait_for_steps

TIMEOUT = 20  # comm.train_timeout_seconds for this run


def _rank_pid(root: int, rank: int) -> int:
    """The pid of the process running rank ``rank`` under ``root`` (by its RANK variable)."""
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"titan.core.train" in cmd and f"RANK={rank}".encode() in env:
            return pid
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(p) for p in (task / "children").read_text().split()]
    raise AssertionError(f"rank {rank} not found")


def test_killed_rank_ends_the_job_naming_it(exact_args, tmp_path, titan_process):
    dump = tmp_path / "run"
    proc = titan_process(
        *exact_args,
        f"--job.dump_folder={dump}",
        "--nproc=2",
        "--training.steps=1000",
        f"--comm.train_timeout_seconds={TIMEOUT}",
    )
    wait_for_steps(proc, dump, 3)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    code = proc.wait(timeout=TIMEOUT + 120)
    took = time.monotonic() - killed
    log = proc.log.read_text()
    assert code == 1, log
    assert "rank 1 killed by SIGKILL" in log, log
    assert "ChildFailedError" not in log and "Traceback" not in log
    assert took < TIMEOUT + 60, took  # the survivor did not wait forever
