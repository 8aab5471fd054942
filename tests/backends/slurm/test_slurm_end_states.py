"""How Slurm jobs end, and what titan says about it before and after (see conftest.py).

Before sbatch: a job into a folder whose checkpoint is past its steps is refused;
a job into a folder it continues says so. After: a job whose requeue budget is
used up ends RESUMABLE with the command that continues it, and that command
continues it at the next step. (Cancelling: test_slurm_cluster.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import (  # noqa: E402
    STEPS,
    SlurmJob,
    dist,
    folder_state,
    job_row,
    jobs_named,
    sbatch_spy,
    titan,
    titan_run,
)

from titan.core.folders import saved_steps


def test_a_job_with_nothing_to_train_is_refused_before_sbatch(cluster_jobs, tmp_path: Path):
    """The parity job's folder holds step 20: the same job with 10 steps has nothing to train."""
    job = cluster_jobs.parity
    assert job.follow().returncode == 0
    before = folder_state(job.dump)
    env, sbatch_calls = sbatch_spy(tmp_path / "bin")
    proc = titan_run(
        "nothing-to-train", job.dump, *cluster_jobs.exact_args, "--training.steps=10", env=env
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: training.steps is 10 but '{job.dump / 'checkpoint'}' already holds step "
        f"{STEPS}: nothing to train; raise training.steps to continue, set "
        "checkpoint.load_step to an earlier step, or use another job.dump_folder"
    ], proc.stderr
    assert not sbatch_calls.exists()  # sbatch never ran
    assert jobs_named("titan-test-nothing-to-train") == []  # nothing queued, nothing in accounting
    assert folder_state(job.dump) == before  # nothing new in the folder


def test_a_used_up_requeue_budget_ends_resumable_with_the_command_to_continue(cluster_jobs):
    """slurm.max_requeues=0 and SIGUSR2 (as the time limit sends it): stop, checkpoint, exit 75.

    Then the printed command continues the run: it says so before it is submitted, and its
    first logged step is the one after the checkpoint.
    """
    job = cluster_jobs.resumable
    stops_after = cluster_jobs.resumable_signalled.result(timeout=600)
    followed = job.follow()
    out = followed.stdout
    assert followed.returncode == 75, out + followed.stderr
    stopped = int(out.split("stopped at step ")[1].split()[0])
    assert stopped == stops_after < job.planned_steps, out
    assert saved_steps(job.dump / "checkpoint")[-1] == stopped
    # The rank's own line says that nothing brings the job back by itself.
    assert "on SIGUSR2: checkpoint" in out and "run the same command again to resume" in out
    ended = next(line for line in out.splitlines() if line.startswith(f"titan: job {job.id} "))
    assert ended.startswith(f"titan: job {job.id} RESUMABLE (Slurm: FAILED, exit code 75): ")
    assert f"stopped after its checkpoint at step {stopped}" in ended
    assert "killed from outside" not in out and "first failure" not in out
    command = ended.split("continue it with: ")[1]
    assert command.startswith("titan run ") and f"--job.dump_folder={job.dump}" in command
    assert "--slurm.max_requeues=0" in command and "--metrics.log_freq=1" in command

    shown = titan("logs", job.id)
    assert shown.returncode == 75 and ended in shown.stdout
    listed = titan("jobs")
    assert listed.returncode == 0, listed.stderr
    row = job_row(listed.stdout, job.id)
    assert "RESUMABLE" in row and command in row

    rows_before = len(job.metrics())
    env = dist.titan_env(**cluster_jobs.resumable_env, COLUMNS="400")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `titan`, as the user has it
    proc = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
    )
    match = re.search(r"submitted Slurm job (\d+)", proc.stderr)
    assert proc.returncode == 0 and match, proc.stderr
    again = SlurmJob("resumed", match.group(1), job.dump, proc.stderr)
    try:
        before_submit = proc.stderr.split("submitted Slurm job")[0]
        assert (
            f"note: continues the run in '{job.dump}' from its checkpoint at step {stopped} "
            f"to step {job.planned_steps}"
        ) in before_submit
        resumed = again.follow()
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"resumed from checkpoint {job.dump / 'checkpoint' / f'step-{stopped}'}" in (
            resumed.stdout
        )
        new_rows = job.metrics()[rows_before:]
        assert new_rows[0]["step"] == stopped + 1
        assert new_rows[-1]["step"] == job.planned_steps
    finally:
        subprocess.run(["scancel", again.id], capture_output=True)


def test_the_record_names_the_cluster_and_what_was_submitted(cluster_jobs):
    job = cluster_jobs.parity
    home = Path(os.environ["TITAN_HOME"]) / "jobs"
    records = [json.loads(p.read_text()) for p in home.glob("*.json")]
    record = next(r for r in records if r["id"] == job.id and r["backend"] == "slurm")
    assert record["cluster"] == "titan"  # ClusterName of scripts/slurm-cluster's slurm.conf
    assert record["name"] == "titan-test-parity"
    assert record["extra"]["argv"][:1] == ["--backend=slurm"]
    assert record["dump_folder"] == str(job.dump)
