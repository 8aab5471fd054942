"""`titan run --backend slurm` on a real two-node Slurm cluster (see conftest.py).

Every job trains the debug model on CPU, one rank on each of the two nodes
(FSDP2 over gloo, rendezvous at node1's NodeAddr 127.0.0.2).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import (  # noqa: E402
    MAX_REQUEUES,
    REQUEUE_GATE,
    STEPS,
    TIME_LIMIT_GATE,
    SlurmJob,
    command_spy,
    dist,
    job_row,
    jobs_named,
    node_fields,
    titan,
    titan_run,
)

from titan.core.folders import saved_steps
from titan.core.layout import LaunchLayout


@pytest.fixture(scope="session")
def local_reference(cluster_jobs) -> dict[int, float]:
    """The parity config through `titan run --nproc 2` (torchrun on this machine)."""
    proc = cluster_jobs.local_reference
    code = proc.wait(timeout=600)
    log = (proc.dump / "titan.log").read_text()
    assert code == 0, log
    return dist.read_losses(proc.dump)


def assert_same_losses(job: SlurmJob, reference: dict[int, float], steps: int) -> None:
    losses = job.losses()
    assert sorted(losses) == list(range(1, steps + 1)), sorted(losses)
    for step, loss in losses.items():
        assert math.isclose(loss, reference[step], rel_tol=1e-6, abs_tol=0.0), (step, loss)


@pytest.fixture
def cancel_job(cluster_jobs) -> Iterator[SlurmJob]:
    """The 100,000-step job the test cancels, scancelled after the test whatever its outcome.

    The session's jobs are cancelled only when the session ends: a run in which this test
    did not reach its `titan cancel` left the job training on a core for the rest of the
    suite (seen once: 62 minutes, 31,218 steps), slowing every later test.
    """
    yield cluster_jobs.cancel
    subprocess.run(["scancel", cluster_jobs.cancel.id], capture_output=True, timeout=60)


def test_jobs_logs_and_cancel_on_a_running_job(cluster_jobs, cancel_job, tmp_path: Path):
    """`titan jobs` shows a running job's step and loss; `titan cancel` waits for its stop
    checkpoint and names it; a job that had already ended is not cancelled (no scancel)."""
    job = cancel_job
    job.wait_for_step(1, timeout=300)
    listed = titan("jobs")
    assert listed.returncode == 0, listed.stderr
    row = job_row(listed.stdout, job.id)
    assert "slurm" in row and "RUNNING" in row and "titan-test-cancel" in row
    progress = re.search(r"step (\d+)/100000\s+(\d+\.\d+)", row)
    assert progress, row  # from the job's metrics.jsonl
    loss = {m["step"]: m["loss"] for m in job.metrics()}[int(progress.group(1))]
    assert progress.group(2) == f"{loss:.4f}", row

    shown = titan("logs", job.id)
    assert shown.returncode == 0 and "step     1/100000" in shown.stdout
    assert f"`titan logs {job.id} -f` follows it" in shown.stdout

    cancelled = titan("cancel", job.id)
    said = cancelled.stdout + cancelled.stderr
    assert cancelled.returncode == 0, said
    step = saved_steps(job.dump / "checkpoint")[-1]  # written on the cancel's SIGTERM
    checkpoint = job.dump / "checkpoint" / f"step-{step}"
    assert f"CANCELLED: newest complete checkpoint: step {step} ({checkpoint})" in said, said
    assert "continue it with: titan run --backend=slurm " in said, said
    assert "CANCELLED" in job_row(titan("jobs").stdout, job.id)
    followed = job.follow()
    assert followed.returncode != 0 and f"titan: job {job.id} CANCELLED" in followed.stdout
    assert f"newest complete checkpoint: step {step}" in followed.stdout
    assert "killed from outside" not in followed.stdout

    finished = cluster_jobs.parity
    assert finished.follow().returncode == 0
    env, scancel_calls = command_spy(tmp_path / "bin", "scancel")
    for ended, state in ((finished, "COMPLETED"), (job, "CANCELLED")):
        again = titan("cancel", ended.id, env=env)
        said = again.stdout + again.stderr
        assert again.returncode == 0, said
        assert state in said and "nothing sent to Slurm" in said, said
        if ended is finished:
            assert "had already ended: COMPLETED" in said, said
        else:
            assert "already cancelled before this request" in said, said
    assert not scancel_calls.exists()  # scancel never ran


def test_crash_ends_failed_naming_the_failing_rank(cluster_jobs):
    """`titan run --wait` and `titan logs` end with the failing rank's error line."""
    job = cluster_jobs.crash
    code = job.waiter.wait(timeout=420)
    waited = (job.dump / "titan-wait.log").read_text()
    assert code != 0, waited
    assert f"titan: job {job.id} FAILED" in waited
    # Rank 1 read the damaged file; rank 0 only lost its peer, which is not named first.
    rank1 = (job.dump / "slurm" / f"{job.id}_1_log.out").read_text()
    error_line = next(line for line in rank1.splitlines() if line.startswith("rank 1: error:"))
    for out in (waited, titan("logs", job.id).stdout):
        assert "first failure: rank 1 on node2" in out
        assert error_line in out
        assert "Traceback (most recent call last)" not in out  # folded into their last lines
    shown = titan("logs", job.id)
    assert shown.returncode == code


def test_two_nodes_train_with_fsdp_like_two_local_ranks(cluster_jobs, local_reference):
    job = cluster_jobs.parity
    followed = job.follow()
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert f"titan: job {job.id} COMPLETED" in followed.stdout
    assert f"step    20/{STEPS}" in followed.stdout  # rank 0's log, through `titan logs -f`
    # One task per node: rank 0 on node1, rank 1 on node2, meeting at node1's address.
    rank_logs = sorted((job.dump / "slurm").glob(f"{job.id}_*_log.out"))
    assert [p.name for p in rank_logs] == [f"{job.id}_0_log.out", f"{job.id}_1_log.out"]
    assert "node=0(2), global_rank=0(2)" in rank_logs[0].read_text()
    assert "node=1(2), global_rank=1(2)" in rank_logs[1].read_text()
    assert job.scontrol()["NodeList"] == "node[1-2]"
    assert_same_losses(job, local_reference, STEPS)
    assert "checkpointing: turned on by the Slurm backend" in job.submit_output
    assert (job.dump / "checkpoint" / f"step-{STEPS}").is_dir()


def test_dry_run_prints_the_script_that_was_submitted(cluster_jobs):
    """--dry-run renders exactly what submitit handed to sbatch for the same arguments."""
    job = cluster_jobs.parity
    proc = titan_run(
        "parity", job.dump, *cluster_jobs.exact_args, f"--training.steps={STEPS}", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    submitted = (job.dump / "slurm" / f"{job.id}_submission.sh").read_text()
    assert proc.stdout == submitted


def test_scontrol_requeue_checkpoints_and_resumes_exactly(cluster_jobs, local_reference):
    """``scontrol requeue`` after step 3 of 20 (both ranks held at step 4 until their SIGTERM):
    every rank stops after step 5 with a checkpoint, Slurm runs the job again, it resumes
    there and its losses are those of a run never interrupted."""
    job = cluster_jobs.requeue
    stops_after = cluster_jobs.requeued.result(timeout=600)  # scontrol requeue, mid-run
    assert stops_after == REQUEUE_GATE + 1 < STEPS
    followed = job.follow()
    out = followed.stdout
    assert followed.returncode == 0, out + followed.stderr
    assert f"titan: job {job.id} COMPLETED" in out
    assert "on SIGTERM: checkpoint" in out  # every rank stopped at a step boundary and saved
    # Slurm brings it back: the stop line says so, not "run the same command again"
    assert f"Slurm requeues job {job.id} and it resumes from this checkpoint by itself" in out
    assert "run the same command again" not in out
    stopped = int(out.split("stopped at step ")[1].split()[0])
    assert stopped == stops_after, out
    assert f"resumed from checkpoint {job.dump / 'checkpoint' / f'step-{stopped}'}" in out
    assert int(job.scontrol()["Restarts"]) == 1
    assert_same_losses(job, local_reference, STEPS)  # final losses as if never interrupted


def test_time_limit_signal_checkpoints_requeues_and_completes(cluster_jobs):
    """A 3 minute time limit, the signal 30-60 s before it: SIGUSR2, checkpoint, requeue.

    The job waits at step 3 for Slurm's own signal (nothing the test sends), so it stops
    after step 4, requeues itself once and trains the rest in its second run.
    """
    job = cluster_jobs.time_limit
    followed = job.follow(timeout=1200)
    out = followed.stdout
    assert followed.returncode == 0, out + followed.stderr
    assert f"titan: job {job.id} COMPLETED" in out
    assert "on SIGUSR2: checkpoint" in out
    assert int(out.split("stopped at step ")[1].split()[0]) == TIME_LIMIT_GATE + 1, out
    assert f"Slurm requeues job {job.id} (1 of slurm.max_requeues = {MAX_REQUEUES})" in out
    assert f"requeued job {job.id} (1 of {MAX_REQUEUES})" in out
    assert (
        f"resumed from checkpoint {job.dump / 'checkpoint' / f'step-{TIME_LIMIT_GATE + 1}'}" in out
    )
    assert int(job.scontrol()["Restarts"]) == 1
    assert max(job.losses()) == job.planned_steps


def test_unknown_job_is_one_line(cluster_jobs):
    proc = titan("logs", "999999")
    assert proc.returncode == 2
    assert "no job '999999'" in proc.stderr and "Traceback" not in proc.stderr


def test_what_sbatch_refuses_names_the_key(slurm_cluster, tmp_path: Path):
    """A node feature no node has: the layout does not read features, sbatch refuses it."""
    proc = titan_run(
        "bad-feature", tmp_path / "run", "--slurm.constraint=nofeature", "--training.steps=1"
    )
    assert proc.returncode == 2
    assert "sbatch refused the job" in proc.stderr and "slurm.constraint" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert jobs_named("titan-test-bad-feature") == []


def test_the_ranks_get_the_layout_titan_run_checked(cluster_jobs):
    """The layout travels in the pickled call of every task, read there into TITAN_LAUNCH_LAYOUT."""
    from submitit.core.utils import DelayedSubmission

    job = cluster_jobs.parity
    pickled = job.dump / "slurm" / f"{job.id}_submitted.pkl"
    layout = LaunchLayout.from_env(DelayedSubmission.load(pickled).args[3])
    assert (layout.nodes, layout.procs_per_node) == (2, 1)
    assert layout.where == "Slurm: 2 node(s) x 1 CPU rank(s), partition 'debug'"
    real_memory = int(node_fields("node1")["RealMemory"])
    assert layout.device.kind == "cpu" and layout.device.memory_bytes == real_memory * 1024**2
