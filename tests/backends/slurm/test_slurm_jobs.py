"""Job records, states and stop lines of the Slurm backend, where no cluster is needed.

What a record's resume command is, which Slurm end is RESUMABLE, the one line
for a missing Slurm configuration (before anything is written), `titan logs -f`
giving up on a cluster it cannot reach within a bounded time, and the rank's
stop line when Slurm brings the job back by itself.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prerequisites import require  # noqa: E402
from slurm_helpers import missing_slurm, titan  # noqa: E402

from titan.backends.slurm import jobs, task
from titan.core import faults
from titan.core.jobs import JobRecord, JobStore


def record(tmp_path: Path, **extra) -> JobRecord:
    log = tmp_path / "dump" / "slurm" / "7_0_log.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("step     1/10  loss  8.1\n")
    return JobRecord(
        backend="slurm",
        id="7",
        name="llama3-debug",
        dump_folder=str(tmp_path / "dump"),
        logs=[str(log)],
        extra=extra,
        cluster="gone",
    )


def test_the_resume_command_is_the_submitted_one_into_the_same_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["cfg.toml", "--backend", "slurm", "--job.dump_folder", "out", "--training.steps=9"]
    rec = record(tmp_path, argv=argv, cwd=str(tmp_path))
    dump = rec.dump_folder
    expected = f"titan run cfg.toml --backend slurm --training.steps=9 --job.dump_folder={dump}"
    assert jobs.resume_command(rec) == expected
    rec.extra["argv"] = ["--job.dump_folder=out", "--backend=slurm"]
    assert jobs.resume_command(rec) == f"titan run --backend=slurm --job.dump_folder={dump}"
    monkeypatch.chdir("/")  # elsewhere, the command first goes where it was submitted from
    assert jobs.resume_command(rec).startswith(f"cd {shlex.quote(str(tmp_path))} && titan run ")
    rec.extra = {"config_file": f"{dump}/job_config.toml"}  # submitted from Python
    assert jobs.resume_command(rec) == f"titan run {dump}/job_config.toml --backend=slurm"


@pytest.mark.parametrize(
    ("raw", "code", "state"),
    [
        ("FAILED", 75, "RESUMABLE"),  # stopped after a checkpoint, no requeue left
        ("FAILED", 1, "FAILED"),
        ("NODE_FAIL", 75, "FAILED"),
        ("CANCELLED by 0", 0, "CANCELLED"),
        ("COMPLETING", 0, "STOPPING"),
        ("BOGUS", 0, "UNKNOWN"),
    ],
)
def test_slurm_end_states_in_titan_words(raw, code, state):
    assert jobs._titan_state(raw, code, 0) == state


def test_an_unknown_state_always_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_CONF", raising=False)
    rec = record(tmp_path, slurm_conf=str(tmp_path / "gone" / "slurm.conf"))
    status = jobs.job_status(rec)
    assert status.state == "UNKNOWN"
    assert status.detail.startswith("Slurm's configuration was not found")
    assert "export SLURM_CONF=" in status.detail


def test_no_slurm_configuration_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    """Without SLURM_CONF (and no slurm.conf where Slurm looks by default), or with one that
    names a missing file: one line naming the environment as the fix, exit 2, nothing written.

    Needs Slurm's client commands (titan refuses earlier without sbatch). A machine whose
    Slurm has a default configuration (/etc/slurm/slurm.conf: a real cluster's login node)
    cannot be without one: the case does not exist there, so the test is skipped.
    """
    if line := missing_slurm(("sbatch",)):
        require(line)
    if Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("this machine's Slurm has a default slurm.conf: it always has a configuration")
    dump = tmp_path / "run"
    base = ["run", "--backend=slurm", "--slurm.gpus_per_node=0", f"--job.dump_folder={dump}"]
    for conf, why in (("", ""), (str(tmp_path / "no.conf"), f" (SLURM_CONF={tmp_path}/no.conf")):
        if conf:
            monkeypatch.setenv("SLURM_CONF", conf)
        else:
            monkeypatch.delenv("SLURM_CONF", raising=False)
        started = time.monotonic()
        proc = titan(*base)
        assert time.monotonic() - started < 60  # not Slurm's minute of retries
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: Slurm's configuration was not found{why}")
        assert lines[0].endswith(
            "export SLURM_CONF=/path/to/slurm.conf (or run on the cluster's login node)"
        )
        assert not dump.exists()


def test_following_a_job_slurm_cannot_be_asked_about_ends_with_one_line(tmp_path, monkeypatch):
    """No configuration: `titan logs -f` prints the log, then why it stops, at once."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("TITAN_HOME", str(tmp_path / "home"))
    rec = record(tmp_path, slurm_conf=str(tmp_path / "gone" / "slurm.conf"))
    rec.cluster = ""
    JobStore(tmp_path / "home" / "jobs").add(rec)
    started = time.monotonic()
    proc = titan("logs", "7", "-f", env={"TITAN_HOME": str(tmp_path / "home")}, timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "step     1/10  loss  8.1"
    assert lines[-1].startswith("titan: job 7 is UNKNOWN: Slurm could not be asked about it (")
    assert "Slurm's configuration was not found" in lines[-1]


def test_following_gives_up_after_a_bounded_wait(tmp_path, monkeypatch):
    """A cluster that does not answer: following stops after UNKNOWN_FOLLOW_S, saying why."""
    rec = record(tmp_path)
    rec.cluster = ""
    unanswered = jobs.SlurmState("UNKNOWN", "UNKNOWN", 0, reason="Slurm did not answer")
    monkeypatch.setattr(jobs, "query_state", lambda r: unanswered)
    monkeypatch.setattr(jobs, "UNKNOWN_FOLLOW_S", 0.3)
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        code = jobs.show_logs(rec, follow=True, out=f, poll_s=0.05)
    assert code == 1
    last = out.read_text().splitlines()[-1]
    assert last.startswith("titan: job 7 is UNKNOWN: Slurm could not be asked about it for 0.3 s")


def test_the_stop_line_says_when_slurm_brings_the_job_back(monkeypatch):
    """Rank 0 under Slurm: SIGUSR2 with requeues left, or a requeue Slurm already counted."""
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    fields = {"JobState": "RUNNING", "Restarts": "1"}
    monkeypatch.setattr(task, "job_fields", lambda job_id: fields)
    monkeypatch.setattr(faults, "resume_hint", lambda signum: task.resume_hint(3, signum))

    def line(signum: int) -> str:
        return faults.stopped_message(5, signum, "/d/checkpoint/step-5", 1.0).message

    assert "Slurm requeues job 42 (2 of slurm.max_requeues = 3) and it resumes from this " in (
        line(signal.SIGUSR2)
    )
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # the budget is used up
    fields["Restarts"] = "3"
    assert "; run the same command again to resume (exit code 75)" in line(signal.SIGUSR2)
    fields.update(JobState="COMPLETING", Restarts="4")  # scontrol requeue, preemption
    assert (
        "; Slurm requeues job 42 and it resumes from this checkpoint by itself (exit code 75)"
        in (line(signal.SIGTERM))
    )
    fields["Restarts"] = "3"  # scancel: nothing brings it back
    assert "; run the same command again to resume" in line(signal.SIGTERM)
    monkeypatch.setattr(faults, "resume_hint", None)  # any other launcher: as before
    assert "; run the same command again to resume" in line(signal.SIGUSR2)
