"""Job records: the backend-neutral memory behind `titan jobs`, `titan logs`, `titan cancel`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from titan.core.errors import ConfigError
from titan.core.jobs import (
    FINAL_STATES,
    STATES,
    JobRecord,
    JobStatus,
    JobStore,
    as_status,
    job_name,
    job_store,
    unique_name,
)


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
    with pytest.raises(ConfigError, match=r"ambiguous \(.*slurm:5.*\); name it as one of these"):
        store.find("5")
    assert store.find("other:5").name == "b"
    with pytest.raises(ConfigError, match="no job '9'.*`titan jobs`"):
        store.find("9")


def test_store_honours_titan_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITAN_HOME", str(tmp_path))
    assert job_store().folder == tmp_path / "jobs"


# --- states --------------------------------------------------------------------------------


def test_resumable_is_a_final_state_and_unknown_always_says_why() -> None:
    assert "RESUMABLE" in STATES and "RESUMABLE" in FINAL_STATES
    assert as_status("RUNNING") == JobStatus("RUNNING")  # an old backend's bare string
    assert as_status("completed") == JobStatus("COMPLETED")
    kept = JobStatus("RESUMABLE", "requeue budget used (3 of 3) after a checkpoint at step 40")
    assert as_status(kept) == kept
    for value in ("UNKNOWN", JobStatus("UNKNOWN"), None, "BOOT_FAIL", 3):
        status = as_status(value)
        assert status.state == "UNKNOWN" and status.detail, value
    assert "BOOT_FAIL" in as_status("BOOT_FAIL").detail
    assert as_status(JobStatus("FAILED", "two\nlines")).detail == "two lines"
    assert str(kept) == "RESUMABLE: requeue budget used (3 of 3) after a checkpoint at step 40"


# --- names ---------------------------------------------------------------------------------


def _job(description: str = "titan job", config_file: str | None = None, flavor: str = "debug"):
    config = SimpleNamespace(
        job=SimpleNamespace(description=description),
        model=SimpleNamespace(name="llama3", flavor=flavor),
    )
    return SimpleNamespace(config=config, config_file=Path(config_file) if config_file else None)


def test_job_names_come_from_the_config() -> None:
    assert job_name(_job("ablation lr=3e-4", "examples/llama3_8b.toml")) == "ablation lr=3e-4"
    assert job_name(_job(config_file="examples/llama3_8b.toml")) == "llama3_8b"
    assert job_name(_job()) == "llama3-debug"
    assert job_name(_job(flavor="/ckpt/hf-1b/titan_model.json")) == "llama3-hf-1b"


def test_names_are_unique_and_select_one_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    names = []
    for job_id in ("11", "12", "13"):
        name = unique_name("llama3-debug", store)
        store.add(JobRecord("slurm", job_id, name, "/a"))
        names.append(name)
    assert names == ["llama3-debug", "llama3-debug-2", "llama3-debug-3"]
    assert store.find("llama3-debug-2").id == "12"
    assert store.find("llama3-debug").id == "11"
    assert unique_name("12", store) == "12-2"  # a name never shadows another job's id


# --- clusters ------------------------------------------------------------------------------


def test_two_clusters_job_1_are_both_kept_and_selectable(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old = JobRecord(
        "slurm", "1", "old-run", "/a", submitted="2025-01-01T00:00:00Z", cluster="alpha"
    )
    new = JobRecord("slurm", "1", "new-run", "/b", submitted="2026-01-01T00:00:00Z", cluster="beta")
    assert store.add(old) != store.add(new)
    assert {p.name for p in tmp_path.iterdir()} == {"slurm-alpha-1.json", "slurm-beta-1.json"}
    assert [r.name for r in store.all()] == ["new-run", "old-run"]
    with pytest.raises(ConfigError, match=r"ambiguous \(slurm:beta/1, slurm:alpha/1\)"):
        store.find("1")
    assert store.find("slurm:alpha/1") == old
    assert store.find("beta/1") == new
    assert store.find("old-run") == old
    # The same job added again (same key) replaces its record.
    store.add(JobRecord("slurm", "1", "new-run", "/b2", cluster="beta"))
    assert store.find("slurm:beta/1").dump_folder == "/b2" and len(store.all()) == 2


def test_records_without_a_cluster_keep_loading(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    legacy = '{"backend": "slurm", "id": "1", "name": "x", "dump_folder": "/x"}'
    (tmp_path / "slurm-1.json").write_text(legacy)
    store.add(JobRecord("slurm", "1", "y", "/y", cluster="alpha"))
    assert store.find("slurm:1").name == "x"  # exactly its BACKEND:ID
    assert store.find("slurm:alpha/1").name == "y"
    assert store.remove(store.find("x")) == [tmp_path / "slurm-1.json"]
    assert [r.name for r in store.all()] == ["y"]


# --- the verbs on records no cluster backend owns ------------------------------------------


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
