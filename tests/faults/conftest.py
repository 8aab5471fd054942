"""Fixtures for the fault tests (helpers in fault_helpers.py, importable by the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_helpers import (  # noqa: E402
    REFERENCE_STEPS,
    metrics_lines,
    read_losses,
    run_titan,
    titan_cmd,
    titan_env,
    write_one_window_corpus,
)
from fault_helpers import exact_args as exact_overrides  # noqa: E402


@dataclass
class Run:
    dump: Path
    losses: dict[int, float]
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def exact_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    corpus = write_one_window_corpus(tmp_path_factory.mktemp("corpus") / "train.jsonl")
    return [*exact_overrides(corpus), "--training.global_batch_size=2"]


@pytest.fixture(scope="session")
def run_exact(exact_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """``run_exact(name, *more, dump=None, env=None)`` -> :class:`Run` (any exit code)."""

    def run(name: str, *more: str, dump: Path | None = None, env: dict | None = None) -> Run:
        dump = dump or tmp_path_factory.mktemp(name)
        before = metrics_lines(dump)
        proc = run_titan(*exact_args, f"--job.dump_folder={dump}", *more, env=env)
        losses = read_losses(dump, skip_lines=before) if metrics_lines(dump) else {}
        return Run(dump, losses, proc)

    return run


@pytest.fixture(scope="session")
def reference(run_exact: Callable) -> Run:
    """One process, gradient accumulation over 2 micro-batches, straight through."""
    run = run_exact("reference", f"--training.steps={REFERENCE_STEPS}")
    assert run.proc.returncode == 0, run.proc.stderr
    assert sorted(run.losses) == list(range(1, REFERENCE_STEPS + 1))
    return run


@pytest.fixture
def titan_process(tmp_path: Path) -> Iterator[Callable]:
    """Start ``titan run ARGS`` in the background in its own session; output in ``proc.log``."""
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None) -> subprocess.Popen:
        log = tmp_path / f"titan-{len(started)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                titan_cmd(*args),
                env=env or titan_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
