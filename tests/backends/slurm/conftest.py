"""A real two-node Slurm cluster for the Slurm backend's tests, and the jobs they share.

The cluster: ``.ci/run`` starts one (``scripts/slurm-cluster start DIR``) and
passes its folder in ``TITAN_TEST_SLURM_CLUSTER``; without it (``uv run pytest``
on a machine with Slurm, or where the script may install it with apt-get as
root) the session starts its own in a fresh folder and stops every daemon by
pid at the end. Either way the cluster's state is new for the test run, so job
ids and submitit folders never meet an earlier run's.

The jobs: the Slurm tests need a few minutes of waiting on Slurm (scheduling,
credentials, a time limit), so every job is submitted at once by the
``cluster_jobs`` fixture and each test waits for its own; they train the debug
model on CPU (fp32, one window per document, as tests/distributed does) so
their losses can be compared bitwise with a local ``titan run --nproc 2``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prerequisites import require  # noqa: E402
from slurm_helpers import (  # noqa: E402
    CLUSTER_SCRIPT,
    REQUEUE_GATE,
    STEPS,
    ClusterJobs,
    crash_corpus,
    dist,
    missing_slurm,
    requeue_at_gate,
    signal_at_gate,
    signal_gate,
    start_local_reference,
    submit,
    submit_and_wait,
    submit_resumable_job,
    submit_time_limit_job,
)

CLUSTER_COMMANDS = ("sbatch", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
"""What scripts/slurm-cluster runs (the daemons are in /usr/sbin on Debian)."""


def require_slurm_installed() -> None:
    """Fail with one line when the cluster cannot be started here: Slurm, munge or MariaDB
    missing and no root to apt-get them (as root, scripts/slurm-cluster installs them; any
    user can run the cluster once they are installed)."""
    line = missing_slurm(CLUSTER_COMMANDS)
    if line and os.geteuid() != 0:
        require(line)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The cluster's folder, with SLURM_CONF exported for this process and its children."""
    given = os.environ.get("TITAN_TEST_SLURM_CLUSTER")
    if given:
        folder, started = Path(given), False
    else:
        require_slurm_installed()
        folder, started = tmp_path_factory.mktemp("slurm-cluster"), True
        proc = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start", str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode:
            subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(folder)], timeout=120)
            pytest.fail(f"could not start the Slurm cluster:\n{proc.stdout}\n{proc.stderr}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    os.environ["PATH"] = os.environ["PATH"] + ":/usr/sbin"
    yield folder
    if started:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(folder)], timeout=180)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def exact_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return dist.exact_args(
        dist.write_one_window_corpus(tmp_path_factory.mktemp("corpus") / "train.jsonl")
    )


@pytest.fixture(scope="session")
def cluster_jobs(
    slurm_cluster: Path, exact_args: list[str], tmp_path_factory: pytest.TempPathFactory
):
    """Every test job, submitted at once so that their waits overlap.

    Two things happen in the background while the tests wait for other jobs: the
    requeue job is requeued (``scontrol requeue``) once both its ranks are held at
    the start of step 4 (a gate plugin, :data:`slurm_helpers.SIGNAL_GATE`, holds
    them there until their SIGTERM has arrived), and the resumable job gets SIGUSR2
    (``scancel --signal``) once both its ranks are held at the start of step 3:
    what happens next does not depend on how fast anything runs.
    The local reference run (``titan run --nproc 2``) runs alongside.
    """
    runs = tmp_path_factory.mktemp("slurm-runs")
    steps = f"--training.steps={STEPS}"
    pool = ThreadPoolExecutor(max_workers=2)
    parity = submit("parity", runs / "parity", *exact_args, steps)
    requeue_gate = signal_gate(runs / "requeue-gate", REQUEUE_GATE)
    requeue = submit("requeue", runs / "requeue", *exact_args, steps, env=requeue_gate.env)
    resumable, resumable_gate = submit_resumable_job(runs / "resumable", exact_args)
    jobs = ClusterJobs(
        parity=parity,
        requeue=requeue,
        crash=submit_and_wait(
            "crash",
            runs / "crash",
            "--training.steps=3",
            "--training.seq_len=32",
            "--training.local_batch_size=1",
            f"--training.dataset_path={crash_corpus(runs / 'crash-data')}",
        ),
        cancel=submit(  # one rank is enough to show cancel, and leaves the CPUs to the others
            "cancel", runs / "cancel", *exact_args, "--training.steps=100000", "--slurm.nodes=1"
        ),
        exact_args=exact_args,
        requeued=pool.submit(requeue_at_gate, requeue, requeue_gate),
        time_limit=submit_time_limit_job(runs / "time-limit", exact_args),
        local_reference=start_local_reference(runs / "local-reference", exact_args, STEPS),
        resumable=resumable,
        resumable_signalled=pool.submit(signal_at_gate, resumable, resumable_gate),
        resumable_env=resumable_gate.env,
    )
    yield jobs
    pool.shutdown(wait=True, cancel_futures=True)
    ids = [j.id for j in (parity, requeue, jobs.crash, jobs.cancel, jobs.time_limit, resumable)]
    subprocess.run(["scancel", *ids], capture_output=True)
    if jobs.crash.waiter.poll() is None:
        jobs.crash.waiter.kill()
        jobs.crash.waiter.wait()
    if jobs.local_reference.poll() is None:
        jobs.local_reference.kill()
        jobs.local_reference.wait()
