"""What every Slurm task of a titan job runs: one task is one rank.

submitit unpickles :func:`run_rank` on each task (``srun`` starts them all).
It sets up ``torch.distributed``'s environment with submitit's
``TorchDistributedEnvironment``, points the rendezvous at the first node's
``NodeAddr`` (Slurm node names need not resolve: ``scontrol show node`` gives
an address every node can reach), and trains in-process with
``titan.core.train``.

Exit codes decide what Slurm does next:

* 0: the run finished (COMPLETED).
* 75 (``EXIT_STOPPED_RESUMABLE``): the ranks stopped on a signal after a
  checkpoint. On Slurm's time-limit signal (SIGUSR2, ``--signal``) rank 0
  requeues the job itself, up to ``slurm.max_requeues`` times; on SIGTERM
  (``scontrol requeue``, preemption, ``scancel``) Slurm already decided what
  comes next. A requeued job runs this again and the trainer resumes from the
  newest checkpoint, with no flag from the user.
* anything else: the rank failed; it prints one ``titan: rank R ... failed``
  line (after the full traceback, which stays in its log) and srun's
  ``--kill-on-bad-exit`` ends the other ranks: the job ends FAILED.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

from titan.core.errors import EXIT_STOPPED_RESUMABLE
from titan.core.layout import LAYOUT_ENV

FAILURE_MARK = "titan: rank "
"""Start of the one line a failing rank prints last (``titan logs`` looks for it)."""


def _say(message: str) -> None:
    print(f"titan: {message}", file=sys.stderr, flush=True)


def _scontrol(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["scontrol", *args], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout


def scontrol_fields(text: str) -> dict[str, str]:
    """``scontrol show ... -o`` output (``Key=Value`` words) as a dict."""
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def first_node_address() -> str:
    """The first node's ``NodeAddr``: an address every node of the job can reach."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        first = _scontrol("show", "hostnames", nodelist).split()[0]
        return scontrol_fields(_scontrol("show", "node", first, "-o"))["NodeAddr"]
    except (OSError, subprocess.SubprocessError, IndexError, KeyError):
        return socket.gethostname()


def job_fields(job_id: str) -> dict[str, str]:
    """The job as the controller sees it now (JobState, Restarts, ...); {} if it cannot say."""
    try:
        return scontrol_fields(_scontrol("show", "job", job_id, "-o", timeout=10))
    except (OSError, subprocess.SubprocessError):
        return {}


def job_state(job_id: str) -> str:
    """The job's JobState as the controller sees it now (e.g. RUNNING, COMPLETING)."""
    return job_fields(job_id).get("JobState", "UNKNOWN")


def _restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeued_by_slurm(fields: dict[str, str]) -> bool:
    """Slurm is requeueing this run (``scontrol requeue``, preemption): it counted a restart
    beyond the one this run started as."""
    try:
        return int(fields.get("Restarts", "0")) > _restarts()
    except ValueError:
        return False


def resume_hint(max_requeues: int, signum: int) -> str:
    """Rank 0's words after its stop checkpoint when Slurm brings the job back by itself.

    "" (the default text: run the same command again) when it will not: a
    cancel, or the requeue budget used up.
    """
    job_id = os.environ.get("SLURM_JOB_ID", "")
    fields = job_fields(job_id)
    state = fields.get("JobState", "UNKNOWN")
    if state == "RUNNING" and signum == signal.SIGUSR2 and _restarts() < max_requeues:
        return (
            f"Slurm requeues job {job_id} ({_restarts() + 1} of slurm.max_requeues = "
            f"{max_requeues}) and it resumes from this checkpoint by itself"
        )
    if state != "RUNNING" and requeued_by_slurm(fields):
        return f"Slurm requeues job {job_id} and it resumes from this checkpoint by itself"
    return ""


def setup_distributed_env(gpus_per_node: int) -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for ``init_process_group('env://')``."""
    from submitit.helpers import TorchDistributedEnvironment

    # Each rank sees all GPUs of its node and picks LOCAL_RANK (the trainer does).
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    os.environ["MASTER_ADDR"] = first_node_address()  # submitit puts the node *name* here
    if gpus_per_node == 0:  # CPU ranks: one OpenMP pool per task's CPUs, no spinning
        os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def requeue_after_stop(max_requeues: int) -> None:
    """Rank 0, after a checkpointed stop: requeue the job if Slurm is not ending it already."""
    job_id = os.environ.get("SLURM_JOB_ID", "")
    restarts = _restarts()
    fields = job_fields(job_id)
    state = fields.get("JobState", "UNKNOWN")
    if state != "RUNNING":
        if requeued_by_slurm(fields):
            _say(f"stopped after a checkpoint; Slurm requeues job {job_id}: it resumes by itself")
        else:
            _say(
                f"stopped after a checkpoint; Slurm is ending job {job_id} ({state}): the "
                "same command submitted again resumes from the checkpoint"
            )
        return
    if restarts >= max_requeues:
        _say(
            f"stopped after a checkpoint; the requeue budget is used up ({restarts} of "
            f"slurm.max_requeues = {max_requeues}): the job ends RESUMABLE; submit the same "
            "command again to resume (`titan logs` prints it)"
        )
        return
    try:
        _scontrol("requeue", job_id)
    except subprocess.CalledProcessError as exc:
        _say(f"scontrol requeue {job_id} failed: {exc.stderr.strip()}; resubmit to resume")
        return
    _say(
        f"requeued job {job_id} ({restarts + 1} of {max_requeues}); it resumes from the "
        "checkpoint when it runs again"
    )


def run_rank(config_path: str, gpus_per_node: int, max_requeues: int, layout: str = "") -> None:
    """Train one rank of the job in ``config_path``; exit as described in the module docstring.

    ``layout``: the launch layout ``titan run`` checked the job against
    (``LaunchLayout.to_env()``); the rank checks it again against the same
    one, read from ``TITAN_LAUNCH_LAYOUT``.
    """
    from titan.core import faults

    if layout:
        os.environ[LAYOUT_ENV] = layout
    # First of all: a stop signal from now on (Slurm's may come while torch is imported) is
    # recorded for the trainer, which stops at its first step boundary. Left to submitit's own
    # handlers, SIGUSR2 would end the job without a checkpoint and SIGTERM would be ignored.
    faults.install_stop_handlers()
    rank = os.environ.get("SLURM_PROCID", "0")
    if rank == "0":  # the rank that prints the stop line says whether Slurm brings the job back
        faults.resume_hint = functools.partial(resume_hint, max_requeues)
    where = f"{rank} on {os.environ.get('SLURMD_NODENAME', socket.gethostname())}"
    try:
        setup_distributed_env(gpus_per_node)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if rank == "0" and restarts not in ("", "0"):
            _say(f"job {os.environ.get('SLURM_JOB_ID')} runs again (restart {restarts})")
        from titan.core.train import main

        code = main([config_path])
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        if isinstance(exc, SystemExit):
            raise
        traceback.print_exc()
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        _fail(where, last, 1)
    for sig in faults.STOP_SIGNALS:  # training is over: a late signal changes nothing now
        signal.signal(sig, signal.SIG_IGN)
    if code == EXIT_STOPPED_RESUMABLE:
        if rank == "0":
            requeue_after_stop(max_requeues)
            sys.exit(code)
        return  # rank 0 speaks for the job; another non-zero exit here would kill it early
    if code:
        _fail(where, f"exited with code {code} (its error is above)", code)


def _fail(where: str, what: str, code: int) -> None:
    now = time.time()  # milliseconds: ranks of one job fail within the same second
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    print(f"{FAILURE_MARK}{where} failed at {stamp}: {what}", file=sys.stderr, flush=True)
    sys.stderr.flush()
    sys.exit(code)
