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
from titan.core.testing import install_plugin, pythonpath_with

REPO = Path(__file__).resolve().parents[3]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster"
STEPS = 20
"""Steps of the parity and requeue jobs (and of the local reference run)."""


sys.path.insert(0, str(REPO / "tests"))
import exact_runs as dist  # noqa: E402  (the corpus writer and exact-run settings)

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
    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m["step"] >= step for m in self.metrics()):
                return
            time.sleep(0.3)
        pytest.fail(f"job {self.name} ({self.id}) did not reach step {step} in {timeout} s")

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


def submit(name: str, dump: Path, *args: str, env: dict[str, str] | None = None) -> SlurmJob:
    """``titan run --backend slurm`` (2 CPU nodes x 1 rank unless ARGS say otherwise).

    ENV reaches the job too: sbatch passes the submitting environment on.
    """
    proc = titan(*_submit_args(name, dump, args), env=env)
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
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r"submitted Slurm job (\d+)", (dump / "titan-wait.log").read_text())
        if match:
            job = SlurmJob(name, match.group(1), dump, "")
            job.waiter = proc
            return job
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"submitting {name} failed:\n{(dump / 'titan-wait.log').read_text()}")


@dataclass
class ClusterJobs:
    parity: SlurmJob
    requeue: SlurmJob
    crash: SlurmJob
    cancel: SlurmJob
    exact_args: list[str]
    requeued: Future
    """Done once ``scontrol requeue`` of the requeue job was issued (its result: the step seen)."""
    time_limit: SlurmJob
    local_reference: subprocess.Popen
    """`titan run --nproc 2` of the parity config; its dump folder is ``.dump``."""
    resumable: SlurmJob
    """A job with slurm.max_requeues=0 that gets SIGUSR2 mid-run: it ends RESUMABLE."""
    resumable_signalled: Future
    """Done once the resumable job was signalled (its result: the last step it had logged)."""


def signal_at_step(job: SlurmJob, step: int, signal: str = "USR2") -> int:
    """``scancel --signal`` the job's ranks as soon as it has logged ``step`` (it goes on
    running: the ranks stop at a step boundary after a checkpoint, as on Slurm's
    time-limit signal)."""
    job.wait_for_step(step, timeout=400)
    subprocess.run(["scancel", f"--signal={signal}", job.id], check=True, capture_output=True)
    return max(m["step"] for m in job.metrics())


def requeue_at_step(job: SlurmJob, step: int) -> int:
    """``scontrol requeue`` the job as soon as it has logged ``step``: it is mid-run then."""
    job.wait_for_step(step, timeout=400)
    subprocess.run(["scontrol", "requeue", job.id], check=True, capture_output=True)
    return max(m["step"] for m in job.metrics())


TIME_LIMIT_MIN = 3
SIGNAL_DELAY = 30
"""The time-limit job's --slurm.time (minutes) and --slurm.signal_delay (seconds). Slurm checks
limits about every 30 s, so the signal comes 120 to 150 s after the job started."""
MAX_REQUEUES = 6
PACE_S = 0.5
TIME_LIMIT_STEPS = 400
"""The time-limit job's steps take at least PACE_S each (the pace plugin): 400 steps need 200 s
or more, beyond the 180 s limit, so no run can finish before the signal however fast the
machine is. A run gets 150 s or less: the first checkpoints at step 300 at most, the second
has 100 steps (50 s) or more to do, and is as little hurried (a slower machine only requeues
more often)."""

PACE_PLUGIN = '''
"""pace: each step takes at least [pace] seconds (a test plugin: a job as long on any machine)."""

import time
from dataclasses import dataclass

from titan.core import hookimpl


@dataclass
class PaceSection:
    seconds: float = 0.0


_step_started = [0.0]


@hookimpl
def titan_config_sections():
    return {"pace": PaceSection}


@hookimpl
def titan_step_start(trainer, step):
    _step_started[0] = time.monotonic()


@hookimpl
def titan_step_end(trainer, step, metrics):
    left = trainer.config.pace.seconds - (time.monotonic() - _step_started[0])
    if left > 0:
        time.sleep(left)
'''


def pace_env(site: Path) -> dict[str, str]:
    """The environment (``PYTHONPATH``, which sbatch passes to the job) of a job whose steps
    the ``pace`` plugin slows down to ``--pace.seconds`` each, installed in ``site``."""
    if not site.exists():
        install_plugin(site, "pace", PACE_PLUGIN)
    return {"PYTHONPATH": pythonpath_with(site)}


def submit_time_limit_job(dump: Path, exact_args: list[str]) -> SlurmJob:
    """A job that cannot finish before its time-limit signal, and finishes after a requeue or two.

    Its steps are paced by a plugin installed for it (as a third-party package on
    ``PYTHONPATH``, which sbatch passes to the job), so its length does not depend on
    how fast this machine is or how many other test jobs share it.
    """
    job = submit(
        "time-limit",
        dump,
        *exact_args,
        "--plugins=pace",
        f"--pace.seconds={PACE_S}",
        f"--training.steps={TIME_LIMIT_STEPS}",
        f"--slurm.time={TIME_LIMIT_MIN}",
        f"--slurm.signal_delay={SIGNAL_DELAY}",
        f"--slurm.max_requeues={MAX_REQUEUES}",
        env=pace_env(dump.parent / "pace-site"),
    )
    job.planned_steps = TIME_LIMIT_STEPS
    return job


RESUMABLE_STEPS = 12
"""Steps of the resumable job: it is signalled at step 2, each step takes PACE_S or more, so it
stops (one step after the signal on two ranks) long before its last step."""


def submit_resumable_job(dump: Path, exact_args: list[str]) -> SlurmJob:
    """A job with no requeue allowed (slurm.max_requeues=0), paced, logging every step."""
    job = submit(
        "resumable",
        dump,
        *exact_args,
        "--plugins=pace",
        f"--pace.seconds={PACE_S}",
        f"--training.steps={RESUMABLE_STEPS}",
        "--metrics.log_freq=1",
        "--slurm.max_requeues=0",
        env=pace_env(dump.parent / "pace-site"),
    )
    job.planned_steps = RESUMABLE_STEPS
    return job


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
