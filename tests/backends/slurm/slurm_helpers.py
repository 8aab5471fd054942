"""Helpers of the Slurm tests: running `titan`, submitting jobs, reading their results.

Imported by conftest.py and the test files after putting this folder on ``sys.path``
(the suite runs with ``--import-mode=importlib``), as tests/optims does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from titan.backends.slurm.task import scontrol_fields

REPO = Path(__file__).resolve().parents[3]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster"
SLURM_PACKAGES = ("slurmctld", "slurmd", "slurmdbd", "slurm-client", "munge", "mariadb-server")
"""What scripts/slurm-cluster apt-get installs (its PACKAGES)."""


def missing_slurm(commands: tuple[str, ...]) -> str:
    """The one line of a machine without ``commands`` (Slurm's, munge's, MariaDB's) on PATH or
    in /usr/sbin, for :func:`prerequisites.require`; "" when all are there."""
    path = f"{os.environ.get('PATH', '')}:/usr/sbin"
    missing = [name for name in commands if not shutil.which(name, path=path)]
    if not missing:
        return ""
    return (
        f"Slurm (not found: {', '.join(missing)}): run the tests as root once so that they "
        f"apt-get install {' '.join(SLURM_PACKAGES)}, or install those packages yourself"
    )


STEPS = 20
"""Steps of the parity and requeue jobs (and of the local reference run)."""


sys.path.insert(0, str(REPO / "tests"))
import exact_runs as dist  # noqa: E402  (the corpus writer and exact-run settings)
from cli_runs import titan_cli  # noqa: E402
from gates import gated_env  # noqa: E402

CLI_KEYS = {"nproc": "launch.nproc_per_node", "nnodes": "launch.nnodes"}


def job_with(*args: str):
    """A job from ``--key=value`` arguments, as `titan run` builds it before any check."""
    from titan.core.launch import prepare_job

    overrides = []
    for arg in args:
        key, value = arg.removeprefix("--").split("=", 1)
        overrides.append((CLI_KEYS.get(key, key), value))
    return prepare_job(None, overrides=overrides, validate=False)


def command_spy(folder: Path, command: str = "sbatch") -> tuple[dict[str, str], Path]:
    """A PATH whose ``command`` notes each call in a file, then runs the real one: (env, that file)."""
    real = shutil.which(command)
    assert real, f"{command} is not on PATH"
    folder.mkdir(parents=True, exist_ok=True)
    calls = folder / f"{command}-calls"
    spy = folder / command
    spy.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {real} "$@"\n')
    spy.chmod(spy.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}, calls


def sbatch_spy(folder: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose ``sbatch`` notes each call in a file, then runs the real one: (env, that file)."""
    return command_spy(folder, "sbatch")


def folder_state(folder: Path) -> list[tuple]:
    """Every file under ``folder`` with its size and modification time, and every folder."""
    return sorted(  # folders by name only: a write test (titan's folder check) touches their mtime
        (
            str(p.relative_to(folder)),
            *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else ()),
        )
        for p in folder.rglob("*")
    )


def jobs_named(name: str) -> list[str]:
    """Ids of the jobs of that name that Slurm knows: queued (squeue) or in accounting (sacct)."""
    queued = subprocess.run(
        ["squeue", "-h", "-o", "%i", "-n", name], capture_output=True, text=True, check=True
    ).stdout.split()
    accounted = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID", f"--name={name}", "-S", "2000-01-01"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return queued + accounted


def titan(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``titan ARGS`` in a subprocess, as a user types it (ENV: extra variables)."""
    full_env = dist.titan_env(**(env or {}))
    full_env["COLUMNS"] = "400"  # `titan jobs`: one table row per line
    return titan_cli(*args, env=full_env, timeout=timeout)


def job_row(listing: str, job_id: str) -> str:
    """The row of job ``job_id`` in `titan jobs` output (StopIteration if it has none)."""
    return next(line for line in listing.splitlines() if line.split()[:1] == [job_id])


@dataclass
class SlurmJob:
    name: str
    id: str
    dump: Path
    submit_output: str
    planned_steps: int = 0
    waiter: subprocess.Popen | None = None
    """The `titan run ... --wait` process, for a job submitted that way."""
    _followed: subprocess.CompletedProcess | None = field(default=None, repr=False)

    def metrics(self) -> list[dict]:
        path = self.dump / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def losses(self) -> dict[int, float]:
        return {m["step"]: m["loss"] for m in self.metrics()}

    def wait_for_step(self, step: int, timeout: float) -> None:
        """Until the job has logged ``step`` (or a later one)."""
        wait_until(
            lambda: any(m["step"] >= step for m in self.metrics()),
            f"job {self.name} ({self.id}) reaching step {step}",
            timeout,
        )

    def follow(self, timeout: float = 420) -> subprocess.CompletedProcess:
        """``titan logs ID -f`` to the job's end (once; later calls return the same result)."""
        if self._followed is None:
            self._followed = titan("logs", self.id, "-f", timeout=timeout)
        return self._followed

    def scontrol(self) -> dict[str, str]:
        out = subprocess.run(
            ["scontrol", "show", "job", self.id, "-o"], capture_output=True, text=True, check=True
        ).stdout
        return scontrol_fields(out)


def _submit_args(name: str, dump: Path, args: tuple[str, ...]) -> list[str]:
    return [
        "run",
        "--backend=slurm",
        "--slurm.gpus_per_node=0",
        "--slurm.nodes=2",
        f"--slurm.job_name=titan-test-{name}",
        f"--job.dump_folder={dump}",
        *args,
    ]


def titan_run(
    name: str, dump: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``titan run --backend slurm`` with the test jobs' settings (2 CPU nodes x 1 rank, job
    name ``titan-test-NAME``; later ARGS override them), to its end: a refusal, a dry run or
    a submission."""
    return titan(*_submit_args(name, dump, args), env=env)


def node_fields(name: str) -> dict[str, str]:
    """A node as Slurm describes it (``scontrol show node``: RealMemory, Gres, CPUTot, ...)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "node", name], capture_output=True, text=True, check=True
    ).stdout
    return scontrol_fields(out)


def submit(name: str, dump: Path, *args: str, env: dict[str, str] | None = None) -> SlurmJob:
    """``titan run --backend slurm`` (2 CPU nodes x 1 rank unless ARGS say otherwise).

    ENV reaches the job too: sbatch passes the submitting environment on.
    """
    proc = titan_run(name, dump, *args, env=env)
    match = re.search(r"submitted Slurm job (\d+)", proc.stderr)
    if proc.returncode or not match:
        pytest.fail(f"submitting {name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return SlurmJob(name, match.group(1), dump, proc.stderr)


def submit_and_wait(name: str, dump: Path, *args: str) -> SlurmJob:
    """``titan run --backend slurm ... --wait`` left running: ``job.waiter`` follows the job."""
    dump.mkdir(parents=True)
    out = (dump / "titan-wait.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "titan.core.cli", *_submit_args(name, dump, (*args, "--wait"))],
        env=dist.titan_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    log = dump / "titan-wait.log"
    submitted = re.compile(r"submitted Slurm job (\d+)")
    wait_until(
        lambda: bool(submitted.search(log.read_text())) or proc.poll() is not None,
        f"submitting {name}",
        timeout=120,
    )
    match = submitted.search(log.read_text())
    if match:
        job = SlurmJob(name, match.group(1), dump, "")
        job.waiter = proc
        return job
    pytest.fail(f"submitting {name} failed:\n{(dump / 'titan-wait.log').read_text()}")


@dataclass
class ClusterJobs:
    parity: SlurmJob
    requeue: SlurmJob
    crash: SlurmJob
    cancel: SlurmJob
    exact_args: list[str]
    requeued: Future
    """Done once ``scontrol requeue`` of the requeue job was issued (its result: the step its
    ranks stop after)."""
    time_limit: SlurmJob
    local_reference: subprocess.Popen
    """`titan run --nproc 2` of the parity config; its dump folder is ``.dump``."""
    resumable: SlurmJob
    """A job with slurm.max_requeues=0 that gets SIGUSR2 mid-run: it ends RESUMABLE."""
    resumable_signalled: Future
    """Done once the resumable job was signalled (its result: the step its ranks stop after)."""
    resumable_env: dict[str, str]
    """The environment the resumable job was submitted from (its gate plugin on PYTHONPATH)."""


def wait_until(condition, what: str, timeout: float = 400) -> None:
    """Until ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


def job_state(job_id: str) -> str:
    """The job's state as Slurm's controller has it now (RUNNING, PENDING, ...; "" if unknown)."""
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    ).stdout.strip()


SIGNAL_GATE = '''
"""Test plugin: step K starts only once this rank has received a stop signal.

Marks ``<gate>/reached-<RANK>`` at the start of step K, then waits until the
rank's stop handler has recorded SIGTERM/SIGUSR1/SIGUSR2 (the test's ``scontrol
requeue`` or ``scancel --signal``, or Slurm's own time-limit signal). Every rank
then holds its stop request before step K's stop poll, so all ranks stop at the
same boundary, one step later (the stop agreement's one-round lag): step K + 1.
Once per rank: a run requeued after that (which may pass step K again) is not held.
"""
import os
import time
from pathlib import Path

from titan.core import faults, hookimpl

AUTOLOAD = True


@hookimpl
def titan_step_start(trainer, step):
    if step != int(os.environ["TITAN_TEST_GATE_AT"]):
        return
    reached = Path(os.environ["TITAN_TEST_GATE"]) / f"reached-{os.environ.get('RANK', '0')}"
    if reached.exists():
        return
    reached.touch()
    deadline = time.monotonic() + 600
    while not faults.stop_signal():
        if time.monotonic() > deadline:
            raise RuntimeError(f"test gate: no stop signal within 600 s at step {step}")
        time.sleep(0.01)
'''


@dataclass
class SignalGate:
    """Where a gated job marks that its ranks are held (see :data:`SIGNAL_GATE`)."""

    folder: Path
    step: int
    """The step whose start waits for the signal; the ranks stop after ``step + 1``."""
    env: dict[str, str]
    """What the submitting environment adds (PYTHONPATH with the plugin, the gate's folder and
    step; sbatch passes it to the job)."""

    def wait_until_held(self, job: SlurmJob, ranks: int = 2) -> None:
        """Until every rank waits at the gate (and the job still runs: Slurm's own word)."""

        def held() -> bool:
            state = job_state(job.id)
            assert state in ("PENDING", "CONFIGURING", "RUNNING"), (job.id, state)
            return all((self.folder / f"reached-{r}").exists() for r in range(ranks))

        wait_until(held, f"job {job.name} ({job.id}) holding at step {self.step}")


def signal_gate(folder: Path, step: int) -> SignalGate:
    """A job's gate at the start of ``step`` (its plugin installed under ``folder``)."""
    env, gate = gated_env(folder, SIGNAL_GATE, step)
    gate_env = {k: env[k] for k in ("PYTHONPATH", "TITAN_TEST_GATE", "TITAN_TEST_GATE_AT")}
    return SignalGate(gate, step, gate_env)


def signal_at_gate(job: SlurmJob, gate: SignalGate, signal: str = "USR2") -> int:
    """``scancel --signal`` the job's ranks once all of them wait at ``gate`` (as Slurm's
    time-limit signal does: the job goes on, stops at a step boundary after a checkpoint).
    Returns the step the ranks stop after."""
    gate.wait_until_held(job)
    subprocess.run(["scancel", f"--signal={signal}", job.id], check=True, capture_output=True)
    return gate.step + 1


def requeue_at_gate(job: SlurmJob, gate: SignalGate) -> int:
    """``scontrol requeue`` the job once all its ranks wait at ``gate``: after step
    ``gate.step - 1``, mid-run. Returns the step the ranks stop after."""
    gate.wait_until_held(job)
    subprocess.run(["scontrol", "requeue", job.id], check=True, capture_output=True)
    return gate.step + 1


REQUEUE_GATE = 4
"""The requeue job is held at the start of step 4 (steps 1-3 done) until its SIGTERM."""
TIME_LIMIT_MIN = 3
SIGNAL_DELAY = 30
"""The time-limit job's --slurm.time (minutes) and --slurm.signal_delay (seconds). Slurm checks
limits about every 30 s, so the signal comes 120 to 150 s after the job started."""
MAX_REQUEUES = 6
TIME_LIMIT_GATE = 3
TIME_LIMIT_STEPS = 8
"""The time-limit job waits at the start of step 3 for Slurm's time-limit signal (SIGUSR2),
so it cannot finish before it however fast the machine is; it stops after step 4, requeues
itself once and trains steps 5-8 in its second run, long before that run's own limit."""


def submit_time_limit_job(dump: Path, exact_args: list[str]) -> SlurmJob:
    """A job that cannot finish before its time-limit signal, and finishes after one requeue.

    Its gate plugin (:data:`SIGNAL_GATE`, a third-party package on ``PYTHONPATH``,
    which sbatch passes to the job) holds it at step 3 until Slurm signals it.
    """
    gate = signal_gate(dump.parent / "time-limit-gate", TIME_LIMIT_GATE)
    job = submit(
        "time-limit",
        dump,
        *exact_args,
        f"--training.steps={TIME_LIMIT_STEPS}",
        f"--slurm.time={TIME_LIMIT_MIN}",
        f"--slurm.signal_delay={SIGNAL_DELAY}",
        f"--slurm.max_requeues={MAX_REQUEUES}",
        env=gate.env,
    )
    job.planned_steps = TIME_LIMIT_STEPS
    return job


RESUMABLE_GATE = 3
RESUMABLE_STEPS = 8
"""The resumable job waits at the start of step 3 for the test's SIGUSR2: it stops after
step 4, long before its last step."""


def submit_resumable_job(dump: Path, exact_args: list[str]) -> tuple[SlurmJob, SignalGate]:
    """A job with no requeue allowed (slurm.max_requeues=0), gated, logging every step."""
    gate = signal_gate(dump.parent / "resumable-gate", RESUMABLE_GATE)
    job = submit(
        "resumable",
        dump,
        *exact_args,
        f"--training.steps={RESUMABLE_STEPS}",
        "--metrics.log_freq=1",
        "--slurm.max_requeues=0",
        env=gate.env,
    )
    job.planned_steps = RESUMABLE_STEPS
    return job, gate


def start_local_reference(dump: Path, exact_args: list[str], steps: int) -> subprocess.Popen:
    """`titan run --nproc 2` (torchrun here) of the parity job's config, in the background."""
    dump.mkdir(parents=True)
    log = (dump / "titan.log").open("w")
    proc = subprocess.Popen(
        dist.titan_cmd(
            *exact_args, f"--training.steps={steps}", "--nproc=2", f"--job.dump_folder={dump}"
        ),
        env=dist.titan_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.dump = dump  # type: ignore[attr-defined]
    return proc


def crash_corpus(folder: Path) -> Path:
    """A dataset folder of two files, the second one damaged. Two ranks read whole files
    (a.jsonl: rank 0, b.jsonl: rank 1), so rank 1 fails on its data and rank 0 does not."""
    folder.mkdir(parents=True)
    good = [json.dumps({"text": f" the lord {i} and thou shall come"}) for i in range(40)]
    (folder / "a.jsonl").write_text("\n".join(good) + "\n")
    (folder / "b.jsonl").write_text(good[0] + "\n" + '{"text": "cut off in the mid\n')
    return folder
