"""Progress of a job (step, loss, tokens/s, ETA) read from the files a real run writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from titan.core import cli_jobs as cli
from titan.core.job_progress import (
    TAIL_BYTES,
    Progress,
    progress_from_dump_folder,
    progress_from_rows,
    tail_rows,
)
from titan.core.jobs import JobRecord, JobStatus, JobStore
from titan.core.registry import BackendRegistry
from titan.core.testing import TitanResult, TitanRunner, titan_in_process


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TitanResult:
    """A real 4-step run logging every step (``titan run --training.steps=4 --metrics.log_freq=1``)."""
    runner = TitanRunner(tmp_path_factory.mktemp("progress"))
    return runner.run("--training.steps=4", "--metrics.log_freq=1").assert_ok()


def test_progress_of_a_finished_run(run: TitanResult) -> None:
    rows = run.metrics
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    p = progress_from_dump_folder(run.dump_folder)
    assert p == Progress(
        step=4,
        total_steps=4,
        loss=rows[-1]["loss"],
        tokens_per_second=rows[-1]["tokens_per_second"],
        eta_seconds=0.0,
    )


def test_eta_from_the_rows_of_a_run_still_going(run: TitanResult, tmp_path: Path) -> None:
    """The same rows in a run of 10 steps: 6 to go at the pace of steps 2-4 (after warm-up)."""
    shutil.copy(run.dump_folder / "metrics.jsonl", tmp_path / "metrics.jsonl")
    config = (run.dump_folder / "job_config.toml").read_text()
    (tmp_path / "job_config.toml").write_text(config.replace("steps = 4\n", "steps = 10\n", 1))
    rows = run.metrics
    p = progress_from_dump_folder(tmp_path)
    assert p is not None and (p.step, p.total_steps) == (4, 10)
    pace = (rows[-1]["elapsed"] - rows[0]["elapsed"]) / 3
    assert p.eta_seconds == pytest.approx(6 * pace)


def test_a_resumed_run_counts_from_its_own_rows() -> None:
    first = [{"step": s, "loss": 9.0, "elapsed": 100.0 * s} for s in (1, 2, 3, 4)]
    resumed = [{"step": s, "loss": 5.0, "elapsed": 10.0 + 2 * (s - 3)} for s in (3, 4, 5)]
    p = progress_from_rows([*first, *resumed], total_steps=10)
    assert p is not None and p.step == 5 and p.loss == 5.0
    assert p.eta_seconds == pytest.approx(2.0 * 5)  # the resumed run's pace, not the first's


def test_only_the_tail_of_a_large_metrics_file_is_read(run: TitanResult, tmp_path: Path) -> None:
    row = run.metrics[-1]
    with (tmp_path / "metrics.jsonl").open("w") as f:
        for step in range(1, 20_001):
            f.write(json.dumps({**row, "step": step, "elapsed": float(step)}) + "\n")
        f.write('{"step": 20001, "loss"')  # a row being written
    shutil.copy(run.dump_folder / "job_config.toml", tmp_path / "job_config.toml")
    assert (tmp_path / "metrics.jsonl").stat().st_size > 50 * TAIL_BYTES
    tail = tail_rows(tmp_path / "metrics.jsonl")
    assert 0 < len(tail) < 1000 and tail[-1]["step"] == 20_000
    p = progress_from_dump_folder(tmp_path)
    assert p is not None and p.step == 20_000 and p.total_steps == 4


def test_no_metrics_no_progress(tmp_path: Path) -> None:
    assert progress_from_dump_folder(tmp_path) is None
    assert progress_from_dump_folder(tmp_path / "absent") is None


class _Cluster:
    name, description = "fake", "a cluster in a test"

    def layout(self, job, offline):
        raise NotImplementedError

    def launch(self, job, dry_run, wait=False):
        return 0

    def state(self, record):
        return JobStatus("RUNNING")

    def logs(self, record, follow, out):
        return 0

    def cancel(self, record):
        return None


def test_jobs_shows_the_progress_of_the_dump_folder(
    run: TitanResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = BackendRegistry()
    registry.add(_Cluster())
    monkeypatch.setattr(cli, "_backend_registry", lambda: registry)
    monkeypatch.setenv("TITAN_HOME", str(tmp_path))
    JobStore(tmp_path / "jobs").add(JobRecord("fake", "7", "debug", str(run.dump_folder)))
    code, stdout, stderr = titan_in_process("jobs")
    assert code == 0, stderr
    row = stdout.splitlines()[1].split()
    loss = f"{run.metrics[-1]['loss']:.4f}"
    assert row[:8] == ["7", "fake", "debug", "RUNNING", "step", "4/4", loss, row[7]]
    assert row[8] == "0:00:00"  # ETA: the run is at its last step
