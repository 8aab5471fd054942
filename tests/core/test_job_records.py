"""Job records: the backend-neutral memory behind `titan jobs`, `titan logs`, `titan cancel`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from titan.core.errors import ConfigError
from titan.core.jobs import JobRecord, JobStore, job_store


def test_records_round_trip_newest_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    old = JobRecord("slurm", "7", "a", "/runs/a", submitted="2026-01-01T00:00:00Z", logs=["x.out"])
    new = JobRecord("sagemaker", "titan-b", "b", "/runs/b", submitted="2026-02-01T00:00:00Z")
    store.add(old)
    store.add(new)
    assert [r.id for r in store.all()] == ["titan-b", "7"]
    assert store.find("7") == old
    assert store.find("sagemaker:titan-b") == new
    assert store.find("b") == new  # by name too


def test_damaged_record_is_skipped(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(JobRecord("slurm", "1", "a", "/a"))
    (tmp_path / "slurm-2.json").write_text("{not json")
    assert [r.id for r in store.all()] == ["1"]


def test_unknown_and_ambiguous_jobs_name_the_fix(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(JobRecord("slurm", "5", "a", "/a"))
    store.add(JobRecord("other", "5", "b", "/b"))
    with pytest.raises(ConfigError, match=r"ambiguous \(.*\); name it as BACKEND:ID"):
        store.find("5")
    assert store.find("other:5").name == "b"
    with pytest.raises(ConfigError, match="no job '9'.*`titan jobs`"):
        store.find("9")


def test_store_honours_titan_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITAN_HOME", str(tmp_path))
    assert job_store().folder == tmp_path / "jobs"


def _titan(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TITAN_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_verbs_on_unknown_jobs_and_foreground_backends(tmp_path: Path) -> None:
    empty = _titan("jobs", home=tmp_path)
    assert empty.returncode == 0 and "no jobs yet" in empty.stderr
    missing = _titan("logs", "12", home=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no job '12'" in missing.stderr
    JobStore(tmp_path / "jobs").add(JobRecord("local", "3", "x", str(tmp_path)))
    local = _titan("cancel", "3", home=tmp_path)
    assert local.returncode == 2 and "keeps no job records" in local.stderr
