"""`titan jobs` / `cancel` / `forget` against a fake cluster backend: states with their reasons,
old backends, backends that hang or fail, names, clusters, prune, piped tables.

Most tests run the command in this process (``titan_in_process``) with the fake registered in
the CLI's backend registry; the hanging-backend and piped-table checks run the real console
script with the fake installed as a plugin (``install_plugin``), as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from titan.core import cli_jobs as cli
from titan.core.errors import ConfigError
from titan.core.job_queries import call_all, query_jobs
from titan.core.jobs import JobRecord, JobStatus, JobStore, Progress
from titan.core.registry import BackendRegistry, ClusterBackend
from titan.core.testing import folder_snapshot, install_plugin, pythonpath_with, titan_in_process


class FakeCluster:
    """A cluster backend whose answers the test sets: ``states[id]`` is what ``state`` returns
    (a JobStatus, a bare string as old backends give, an exception to raise, or HANG)."""

    description = "a cluster in a test"
    HANG = object()

    def __init__(self, name: str = "fake", cancel_answer: Any = None) -> None:
        self.name = name
        self.states: dict[str, Any] = {}
        self.cancel_answer = cancel_answer
        self.cancelled: list[str] = []
        self.release = threading.Event()  # lets a hanging call end when the test is over
        self.progresses: dict[str, Progress] | None = None

    def layout(self, job: Any, offline: bool) -> Any:
        raise NotImplementedError

    def launch(self, job: Any, dry_run: bool, wait: bool = False) -> int:
        return 0

    def state(self, record: JobRecord) -> Any:
        value = self.states.get(record.id, "PENDING")
        if value is self.HANG:
            self.release.wait()
            return "RUNNING"
        if isinstance(value, BaseException):
            raise value
        return value

    def logs(self, record: JobRecord, follow: bool, out: Any) -> int:
        return 0

    def cancel(self, record: JobRecord) -> Any:
        self.cancelled.append(record.id)
        return self.cancel_answer


class FakeWithProgress(FakeCluster):
    def progress(self, record: JobRecord) -> Progress | None:
        return Progress(step=7, total_steps=70, loss=3.25, tokens_per_second=1234.0, eta_seconds=90)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TITAN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch):
    """Register backends in the CLI's registry; a hanging call is released at the end."""
    registry = BackendRegistry()
    added: list[FakeCluster] = []

    def register(*backends: FakeCluster) -> BackendRegistry:
        for b in backends:
            registry.add(b)
            added.append(b)
        return registry

    monkeypatch.setattr(cli, "_backend_registry", lambda: registry)
    yield register
    for b in added:
        b.release.set()


def _store(home: Path) -> JobStore:
    return JobStore(home / "jobs")


def _add(home: Path, job_id: str, name: str, backend: str = "fake", **kw: Any) -> JobRecord:
    record = JobRecord(backend, job_id, name, kw.pop("dump_folder", "/nowhere"), **kw)
    _store(home).add(record)
    return record


def _row(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if f"  {name}  " in line)


def test_the_fake_is_a_cluster_backend() -> None:
    assert isinstance(FakeCluster(), ClusterBackend)


def test_states_with_details_and_old_string_states(home: Path, fakes) -> None:
    new, old = FakeCluster("fake"), FakeCluster("oldfake")
    fakes(new, old)
    resume = "requeue budget used (3 of 3) after a checkpoint at step 40; resume: titan run x.toml"
    new.states = {
        "1": JobStatus("RESUMABLE", resume),
        "2": JobStatus("CANCELLED", "cancelled; checkpoint step-20 in /shared/out/checkpoint"),
        "3": ConfigError("Slurm did not answer within 5 s: timed out\nsecond line"),
        "4": RuntimeError("boom"),
    }
    old.states = {"9": "RUNNING", "8": "BOOT_FAIL"}
    for job_id, name in (("1", "resumable"), ("2", "cancelled"), ("3", "noslurm"), ("4", "buggy")):
        _add(home, job_id, name)
    _add(home, "9", "oldrunning", backend="oldfake")
    _add(home, "8", "oldweird", backend="oldfake")
    code, stdout, stderr = titan_in_process("jobs")
    assert code == 0, stderr
    assert stdout.splitlines()[0].split() == [
        "job", "backend", "name", "state", "progress", "loss", "tok/s", "ETA", "submitted", "detail"
    ]  # fmt: skip
    assert "RESUMABLE" in _row(stdout, "resumable") and resume in _row(stdout, "resumable")
    assert "checkpoint step-20 in /shared/out/checkpoint" in _row(stdout, "cancelled")
    assert " UNKNOWN " in _row(stdout, "noslurm")
    assert "Slurm did not answer within 5 s: timed out" in _row(stdout, "noslurm")
    assert "second line" not in stdout
    assert "RuntimeError: boom" in _row(stdout, "buggy")
    assert " RUNNING " in _row(stdout, "oldrunning")
    assert "UNKNOWN" in _row(stdout, "oldweird") and "BOOT_FAIL" in _row(stdout, "oldweird")


def test_json_for_scripts(home: Path, fakes) -> None:
    fake = FakeWithProgress()
    fakes(fake)
    fake.states = {"1": JobStatus("RUNNING")}
    _add(home, "1", "train", cluster="alpha")
    code, stdout, _ = titan_in_process("jobs", "--json")
    assert code == 0
    (job,) = json.loads(stdout)
    assert job["full_ref"] == "fake:alpha/1" and job["state"] == "RUNNING"
    assert job["progress"] == {
        "step": 7, "total_steps": 70, "loss": 3.25, "tokens_per_second": 1234.0, "eta_seconds": 90
    }  # fmt: skip
    assert "step 7/70" in titan_in_process("jobs")[1]


def test_a_backend_that_hangs_is_unknown_within_the_budget(home: Path, fakes) -> None:
    slow, fast = FakeCluster("slow"), FakeCluster("fast")
    fakes(slow, fast)
    slow.states = {"1": FakeCluster.HANG, "2": FakeCluster.HANG}
    fast.states = {"3": JobStatus("COMPLETED")}
    for job_id, backend in (("1", "slow"), ("2", "slow"), ("3", "fast")):
        _add(home, job_id, f"job{job_id}", backend=backend)
    start = time.monotonic()
    views = query_jobs(_store(home).all(), cli._backend_registry(), timeout_s=0.5)
    assert time.monotonic() - start < 5
    by_id = {v.record.id: v.status for v in views}
    assert by_id["3"] == JobStatus("COMPLETED")
    for job_id in ("1", "2"):
        assert by_id[job_id].state == "UNKNOWN"
        assert "slow did not answer within 0.5 s" in by_id[job_id].detail
        assert "TITAN_JOBS_TIMEOUT_S" in by_id[job_id].detail


def test_calls_of_a_backend_that_hung_are_not_made() -> None:
    gate = threading.Event()
    made: list[int] = []

    def hang() -> None:
        made.append(1)
        gate.wait()

    try:
        answers = call_all([("a", hang), ("a", lambda: made.append(2)), ("b", lambda: 7)], 0.3, 1)
    finally:
        gate.set()
    assert made == [1] and answers[2].value == 7
    assert answers[0].timed_out and answers[1].error.startswith("not asked: a did not answer")


def test_cancel_says_what_happened(home: Path, fakes) -> None:
    done = FakeCluster("done", JobStatus("COMPLETED", "had already finished; nothing to cancel"))
    stopped = FakeCluster("stop", JobStatus("CANCELLED", "cancelled; checkpoint step-20 in /o"))
    old = FakeCluster("old")  # cancel returns None, as backends did before statuses
    fakes(done, stopped, old)
    old.states = {"5": "COMPLETED", "6": "RUNNING"}
    _add(home, "1", "finished", backend="done")
    _add(home, "2", "running", backend="stop")
    _add(home, "5", "oldfinished", backend="old")
    _add(home, "6", "oldrunning", backend="old")

    code, _, err = titan_in_process("cancel", "finished")
    assert code == 0 and err.startswith("not cancelled: done:1 (finished) had already ended")
    assert "had already finished; nothing to cancel" in err
    code, _, err = titan_in_process("cancel", "running")
    assert code == 0 and err.strip() == (
        "cancelled stop:2 (running): CANCELLED: cancelled; checkpoint step-20 in /o"
    )
    code, _, err = titan_in_process("cancel", "oldfinished")
    assert code == 0 and err.startswith("not cancelled: old:5 (oldfinished) had already ended")
    code, _, err = titan_in_process("cancel", "oldrunning")
    assert code == 0 and err.strip() == "cancelled old:6 (oldrunning)"  # as before
    assert old.cancelled == ["5", "6"]


def test_two_clusters_job_1_selectable_by_the_listed_ref(home: Path, fakes) -> None:
    fake = FakeCluster(cancel_answer=JobStatus("RUNNING", "Slurm sends SIGTERM first"))
    fakes(fake)
    _add(home, "1", "a", cluster="alpha", submitted="2025-01-01T00:00:00Z")
    _add(home, "1", "b", cluster="beta", submitted="2026-01-01T00:00:00Z")
    _add(home, "2", "c", cluster="beta", submitted="2026-02-01T00:00:00Z")
    code, stdout, _ = titan_in_process("jobs")
    refs = [line.split()[0] for line in stdout.splitlines()[1:]]
    assert refs == ["2", "beta/1", "alpha/1"]  # the shortest ref that selects each job
    code, _, err = titan_in_process("cancel", "1")
    assert code == 2 and "fake:beta/1" in err and "fake:alpha/1" in err
    code, _, err = titan_in_process("cancel", "alpha/1")
    assert code == 0 and "cancel requested for fake:alpha/1 (a)" in err and fake.cancelled == ["1"]


def test_prune_and_forget_touch_only_records(home: Path, fakes, tmp_path: Path) -> None:
    fake = FakeCluster()
    fakes(fake)
    dump = tmp_path / "run"
    (dump / "checkpoint").mkdir(parents=True)
    (dump / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    fake.states = {
        "1": JobStatus("COMPLETED"),
        "2": JobStatus("RESUMABLE", "time limit after checkpoint step-40; resume: titan run y"),
        "3": JobStatus("RUNNING"),
        "4": RuntimeError("cluster unreachable"),
        "5": JobStatus("FAILED", "rank 3: CUDA out of memory"),
    }
    for job_id in fake.states:
        _add(home, job_id, f"job{job_id}", dump_folder=str(dump))
    before = folder_snapshot(dump)

    code, stdout, _ = titan_in_process("jobs", "--prune")
    assert code == 0
    assert sorted(r.id for r in _store(home).all()) == ["3", "4"]
    assert "forgot fake:1 (job1): COMPLETED" in stdout
    assert "resume: titan run y" in stdout  # what a RESUMABLE job's record knew is printed
    assert "kept 2 (1 whose state could not be asked)" in stdout

    code, stdout, _ = titan_in_process("forget", "job3")
    assert code == 0 and stdout.startswith("forgot fake:3 (job3): removed ")
    assert [r.id for r in _store(home).all()] == ["4"]
    assert folder_snapshot(dump) == before
    assert "nothing on the cluster" in titan_in_process("forget", "--help")[1]


FAKE_PLUGIN = '''
"""fakecluster: a cluster backend for tests; jobs whose id starts with 'hang' never answer."""
import threading

from titan.core import hookimpl
from titan.core.jobs import JobStatus


class FakeCluster:
    name = "fakecluster"
    description = "a cluster in a test"

    def layout(self, job, offline):
        raise NotImplementedError

    def launch(self, job, dry_run, wait=False):
        return 0

    def state(self, record):
        if record.id.startswith("hang"):
            threading.Event().wait()
        return JobStatus("RESUMABLE", record.extra["detail"])

    def logs(self, record, follow, out):
        return 0

    def cancel(self, record):
        return None


@hookimpl
def titan_register_backends(registry):
    registry.add(FakeCluster())
'''


def test_console_script_budget_and_piped_rows(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_plugin(site, "fakecluster", FAKE_PLUGIN)
    home = tmp_path / "home"
    long_detail = "requeue budget used (3 of 3) after a checkpoint at step 40; resume: " + (
        "titan run /shared/configs/llama3_8b.toml --slurm.partition=gpu " * 3
    )
    for job_id, name in (("hang-1", "x" * 50), ("2", "long-name-" * 5), ("3", "short")):
        _add(home, job_id, name, backend="fakecluster", extra={"detail": long_detail})
    env = {
        **os.environ,
        "TITAN_HOME": str(home),
        "TITAN_JOBS_TIMEOUT_S": "1",
        "COLUMNS": "80",
        "PYTHONPATH": pythonpath_with(site),
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "titan.core.cli", "jobs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert time.monotonic() - start < 10, proc.stderr
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and max(map(len, lines)) > 80  # header + one line per job
    hung = next(line for line in lines if line.startswith("hang-1 "))
    assert "UNKNOWN" in hung and "fakecluster did not answer within 1 s" in hung
    for job_id in ("2", "3"):
        row = next(line for line in lines if line.startswith(f"{job_id} "))
        assert "RESUMABLE" in row and row.endswith(long_detail.strip())
