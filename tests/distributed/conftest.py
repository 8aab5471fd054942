"""Fixtures for the distributed tests: running `titan run` as a user would, and shared runs.

Every run goes through the real CLI in a subprocess (``python -m titan.core.cli run``),
so the local backend, torchrun, the per-rank entry point and DCP are all exercised.

Exactness: the runs are fp32 eager on CPU (bitwise reproducible), without gradient
clipping (a sharded gradient norm is summed in another order, which would change the
clipped gradients in the last bit) and with a constant LR after warmup (so a run that
stops at step 10 and one that goes to 20 share their schedule). The corpus has one
training window per document (see :func:`write_one_window_corpus`), so two ranks with
``local_batch_size=1`` see per step exactly the two micro-batches that one process sees
with gradient accumulation over the same global batch of 2; that one process is the
reference every distributed run is compared with.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exact_runs import exact_args as exact_overrides  # noqa: E402
from exact_runs import read_losses, titan_cmd, titan_env, write_one_window_corpus  # noqa: E402
from exact_runs import run_titan as _run_titan  # noqa: E402

REFERENCE_STEPS = 20


def run_titan(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run ``titan run ARGS`` to completion; fail the test with its output if it fails."""
    proc = _run_titan(*args, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"titan run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Run:
    dump: Path
    losses: dict[int, float]
    stderr: str


@pytest.fixture(scope="session")
def exact_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides shared by every run that is compared bitwise with the reference."""
    corpus = write_one_window_corpus(tmp_path_factory.mktemp("corpus") / "train.jsonl")
    return [*exact_overrides(corpus), "--training.global_batch_size=2"]


@pytest.fixture(scope="session")
def run_exact(exact_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """``run_exact(name, *more_args, dump=None)`` -> :class:`Run`, in a fresh or given folder."""

    def run(name: str, *more: str, dump: Path | None = None) -> Run:
        dump = dump or tmp_path_factory.mktemp(name)
        before = 0
        if (dump / "metrics.jsonl").exists():
            before = len((dump / "metrics.jsonl").read_text().splitlines())
        proc = run_titan(*exact_args, f"--job.dump_folder={dump}", *more)
        return Run(dump, read_losses(dump, skip_lines=before), proc.stderr)

    return run


@pytest.fixture(scope="session")
def reference(run_exact: Callable) -> Run:
    """One process, gradient accumulation over 2 micro-batches, 20 steps straight."""
    return run_exact("reference", f"--training.steps={REFERENCE_STEPS}")


@pytest.fixture(scope="session")
def fsdp_two_ranks(run_exact: Callable) -> Run:
    """Two FSDP2 ranks through torchrun, 10 steps, checkpoint at the end (step-10)."""
    return run_exact(
        "fsdp2",
        "--backend=local",
        "--nproc=2",
        "--training.steps=10",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=10",
    )


@pytest.fixture
def titan_process(tmp_path: Path) -> Callable:
    """Start ``titan run ARGS`` in the background, in its own session (like a terminal job).

    Its output goes to ``proc.log`` (a file: a pipe nobody reads could fill up and
    block the run). Killed at teardown if still alive.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = tmp_path / f"titan-{len(started)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                titan_cmd(*args),
                env=titan_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals sent by the test reach only this run
            )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
