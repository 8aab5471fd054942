"""Shared test setup: keep CPU runs quiet and bounded on the 2-core CI machine.

The ``titan_runner`` fixture comes from ``titan.core.testing``, which the suite opts in to
in the root conftest.py (pytest reads ``pytest_plugins`` there, not here).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Job records (`titan jobs`) of test runs go to a throw-away folder, never ~/.titan,
# removed when the test process exits: one per process, so that pytest-xdist's workers
# (which inherit the environment of the process that starts them) never see each other's.
if "TITAN_HOME" not in os.environ or os.environ.get("TITAN_TEST_OWN_HOME"):
    os.environ["TITAN_HOME"] = tempfile.mkdtemp(prefix="titan-home-")
    os.environ["TITAN_TEST_OWN_HOME"] = "1"
    atexit.register(shutil.rmtree, os.environ["TITAN_HOME"], True)
# `titan jobs` gives each backend 5 s by default; a loaded 2-core CI machine needs more.
os.environ.setdefault("TITAN_JOBS_TIMEOUT_S", "60")


# --- runs compared bit for bit (tests/exact_runs.py): the distributed and fault tests ---

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exact_runs import exact_args as exact_overrides  # noqa: E402
from exact_runs import (  # noqa: E402
    metrics_lines,
    read_losses,
    run_titan,
    titan_cmd,
    titan_env,
    write_one_window_corpus,
)


@dataclass
class Run:
    """A finished ``titan run``: its folder, its losses by step (new rows only), the process."""

    dump: Path
    losses: dict[int, float]
    proc: subprocess.CompletedProcess

    @property
    def stderr(self) -> str:
        return self.proc.stderr

    def ok(self) -> Run:
        """This run, after checking that it succeeded (its output in the failure)."""
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}\n{self.proc.stderr}"
        return self


@pytest.fixture(scope="session")
def exact_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides shared by every run that is compared bitwise with a reference."""
    corpus = write_one_window_corpus(tmp_path_factory.mktemp("corpus") / "train.jsonl")
    return [*exact_overrides(corpus), "--training.global_batch_size=2"]


@pytest.fixture(scope="session")
def run_exact(exact_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """``run_exact(name, *more, dump=None, env=None)`` -> :class:`Run`, whatever its exit code.

    In a fresh folder, or in ``dump`` (a resume): then only the rows it added count.
    """

    def run(name: str, *more: str, dump: Path | None = None, env: dict | None = None) -> Run:
        dump = dump or tmp_path_factory.mktemp(name)
        before = metrics_lines(dump)
        proc = run_titan(*exact_args, f"--job.dump_folder={dump}", *more, env=env)
        losses = read_losses(dump, skip_lines=before) if metrics_lines(dump) else {}
        return Run(dump, losses, proc)

    return run


@pytest.fixture
def titan_process(tmp_path: Path) -> Iterator[Callable]:
    """Start ``titan run ARGS`` in the background, in its own session (like a terminal job).

    Its output goes to ``proc.log`` (a file: a pipe nobody reads could fill up and
    block the run). Killed at teardown if still alive.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None) -> subprocess.Popen:
        log = tmp_path / f"titan-{len(started)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                titan_cmd(*args),
                env=env or titan_env(),
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


# --- prerequisites the machine lacks (tests/prerequisites.py): one line each, at the end ---

from prerequisites import summary_lines  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stats = terminalreporter.stats
    lines = summary_lines([*stats.get("failed", []), *stats.get("error", [])])
    if lines:
        terminalreporter.section("missing prerequisites")
        for line in lines:
            terminalreporter.write_line(line)


# --- pytest-xdist: whole files to a worker, the Slurm tests all in one ---

SHARED_FIXTURE_FOLDERS = ("tests/backends/slurm/",)
"""Folders whose tests share session fixtures that must exist once per test run: the Slurm
tests share one cluster and the jobs submitted to it at once (tests/backends/slurm/conftest.py);
in two workers there would be two clusters on the same ports."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` (pyproject.toml), with each of :data:`SHARED_FIXTURE_FOLDERS` one unit.

    Whole files, because most files build module fixtures (a trained run, a moto server) that
    a split would build twice; ``--dist loadgroup`` with ``xdist_group`` marks was tried and
    still split files (docs/development.md).
    """
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileOrFolderScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            folder = next((f for f in SHARED_FIXTURE_FOLDERS if path.startswith(f)), None)
            return folder or path

    return LoadFileOrFolderScheduling(config, log)
