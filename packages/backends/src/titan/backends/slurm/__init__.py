"""slurm: submit the job to a Slurm cluster through submitit, one Slurm task per rank.

``titan run --backend slurm`` first asks :meth:`SlurmBackend.layout` where the
job would run (nodes x ranks, their device; at submission the partition's
nodes as Slurm reports them, :mod:`titan.backends.slurm.cluster`) and checks
the job against it. Then it writes the effective config into the dump folder
(on a file system the nodes share), submits an sbatch script through
submitit's ``SlurmExecutor`` and returns with the job id, the log paths and
how to follow the job; ``--wait`` follows it to the end. Every task runs
:func:`titan.backends.slurm.task.run_rank`: one task per rank (per GPU), with
submitit's ``TorchDistributedEnvironment`` rather than torchrun, so Slurm's
signals and each rank's exit code reach Slurm directly (docs/slurm.md says
more). Checkpointing is on by default: a job that can be preempted or hit its
time limit must be able to resume, and it requeues itself after a
checkpoint on the time-limit signal.

Module-level imports stay light (no submitit, no torch): ``titan --help``
imports this module.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console

from titan.backends.slurm.cluster import (
    ClusterUnreachable,
    ask_cluster,
    cluster_layout,
    offline_layout,
    slurm_config,
)
from titan.backends.slurm.config import SlurmSection, validate
from titan.core import hookimpl
from titan.core.errors import ConfigError
from titan.core.jobs import JobRecord, JobStatus
from titan.core.launch import CONFIG_FILE_NAME, PreparedJob
from titan.core.layout import LaunchLayout
from titan.core.registry import BackendRegistry

AUTOLOAD = True

_console = Console(stderr=True, highlight=False, soft_wrap=True)

# sbatch's complaints -> the [slurm] key that fixes them.
_SBATCH_ERRORS = (
    ("partition", "slurm.partition"),
    ("account", "slurm.account"),
    ("qos", "slurm.qos"),
    ("time limit", "slurm.time"),
    ("feature", "slurm.constraint"),
    ("gres", "slurm.gpus_per_node or slurm.gpu_type"),
    (
        "node configuration is not available",
        "slurm.nodes, slurm.gpus_per_node, slurm.cpus_per_task or slurm.constraint",
    ),
    ("memory", "slurm.mem"),
)


@dataclass
class SlurmBackend:
    name: str = "slurm"
    description: str = "a Slurm cluster, through submitit: one task per rank, requeue on signal"
    _checkpoint_turned_on: PreparedJob | None = field(default=None, repr=False, compare=False)
    """The job whose checkpointing this backend turned on (said in the run's header)."""

    def layout(self, job: PreparedJob, offline: bool) -> LaunchLayout:
        """Nodes x ranks per node and their device; at submission, checked against the partition.

        Runs every check of the [slurm] keys first, and applies what this
        backend changes in the job (checkpointing on, an absolute dump folder)
        so that the checks and notes after it see the job that will run.
        ``offline`` (``--dry-run``): from [slurm] and [launch] alone. Otherwise
        sbatch must be on PATH, Slurm's configuration must be found, and
        ``sinfo`` is asked for the partition's nodes (a few seconds at most);
        when it cannot answer, one note says so and the offline layout is used.
        """
        config = job.config
        validate(config)
        self._apply_settings(job)
        if offline:
            return offline_layout(config)
        _require_sbatch()
        try:
            cluster = ask_cluster()
        except ClusterUnreachable as exc:
            return offline_layout(config, unreachable=str(exc))
        return cluster_layout(config, cluster)

    def _apply_settings(self, job: PreparedJob) -> None:
        """What the Slurm backend changes in the job, before any check reads it."""
        c = job.config
        c.job.dump_folder = str(Path(c.job.dump_folder).expanduser().absolute())
        if c.slurm.checkpoint and not c.checkpoint.enable_checkpoint:
            c.checkpoint.enable_checkpoint = True
            self._checkpoint_turned_on = job

    def launch(self, job: PreparedJob, dry_run: bool, wait: bool = False) -> int:
        from titan.backends.slurm.script import render_sbatch, submitit_folder

        if job.layout is None:  # launched without `titan run` (a test, a script): check here
            from titan.core.checks import check_job

            check_job(job, self.layout(job, offline=dry_run))
        lay = job.layout
        assert lay is not None
        config = job.config
        self._header(job)
        name = job_name(job)
        if dry_run:
            _console.print(
                f"dry run: would submit {lay.nodes} node(s) x {lay.procs_per_node} rank(s); "
                f"nothing is written or submitted. At submission titan writes "
                f"{job.dump_folder / CONFIG_FILE_NAME} and submitit its files under "
                f"{submitit_folder(config)}. The sbatch script:"
            )
            sys.stdout.write(render_sbatch(config, lay, name))
            sys.stdout.flush()
            return 0
        _require_sbatch()
        # Usually job_config.toml; the path the ranks must read if the core writes elsewhere.
        config_path = job.write_config()
        record = self._submit(job, lay, config_path, name)
        from titan.core.jobs import job_store

        job_store().add(record)
        _console.print(
            f"submitted Slurm job {record.id} ({record.name}): {lay.nodes} node(s) x "
            f"{lay.procs_per_node} rank(s)\n"
            f"  logs (one per rank): {record.logs[0]}"
            + (" ..." if len(record.logs) > 1 else "")
            + f"\n  follow: titan logs {record.id} -f   state: titan jobs   "
            f"cancel: titan cancel {record.id}"
        )
        if not wait:
            return 0
        return self.logs(record, follow=True, out=sys.stdout)

    def _header(self, job: PreparedJob) -> None:
        """Say how the run checkpoints: a job that may be preempted must be able to resume."""
        c = job.config
        if c.slurm.checkpoint and not c.checkpoint.enable_checkpoint:  # launched without layout()
            self._apply_settings(job)
        if self._checkpoint_turned_on is job:
            why = "turned on by the Slurm backend (--slurm.checkpoint=false leaves it off)"
        elif c.checkpoint.enable_checkpoint:
            why = "on"
        else:
            _console.print(
                "checkpointing: off (slurm.checkpoint = false): a preempted or requeued job "
                "starts over"
            )
            return
        _console.print(
            f"checkpointing: {why}; every {c.checkpoint.interval} steps, at the end and when "
            f"Slurm signals ({c.slurm.signal_delay} s before the time limit, on requeue or preemption), in "
            f"{Path(c.job.dump_folder) / c.checkpoint.folder}; a requeued job resumes from it "
            f"(up to {c.slurm.max_requeues} requeues)"
        )

    def _submit(
        self, job: PreparedJob, lay: LaunchLayout, config_path: Path, name: str
    ) -> JobRecord:
        import submitit

        from titan.backends.slurm.script import executor_parameters, submitit_folder
        from titan.backends.slurm.task import run_rank

        c = job.config
        folder = submitit_folder(c)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=c.slurm.max_requeues)
        executor.update_parameters(**executor_parameters(c, lay, name))
        try:  # submitit echoes sbatch's stderr itself: keep it for the one-line error
            with contextlib.redirect_stderr(io.StringIO()):
                submitted = executor.submit(
                    run_rank,
                    str(config_path),
                    c.slurm.gpus_per_node,
                    c.slurm.max_requeues,
                    lay.to_env(),  # the ranks check the job against the layout checked here
                )
        except submitit.core.utils.FailedJobError as exc:
            raise _sbatch_error(exc) from None
        paths = submitit.core.utils.JobPaths  # one log per task, i.e. per rank
        logs = [
            str(paths(folder, job_id=submitted.job_id, task_id=t).stdout)
            for t in range(lay.world_size)
        ]
        extra = {
            "folder": str(folder),
            "nodes": lay.nodes,
            "ranks": lay.world_size,
            "checkpoint_folder": str(job.dump_folder / c.checkpoint.folder),
            # What `titan run` was given, and where: the command that continues the job.
            "argv": submitted_argv(),
            "cwd": os.getcwd(),
            "config_file": str(config_path),
        }
        if os.environ.get("SLURM_CONF"):
            extra["slurm_conf"] = os.environ["SLURM_CONF"]
        return JobRecord(
            backend=self.name,
            id=str(submitted.job_id),
            name=name,
            dump_folder=str(job.dump_folder),
            logs=logs,
            extra=extra,
            cluster=slurm_config().get("ClusterName", ""),
        )

    def state(self, record: JobRecord) -> JobStatus:
        from titan.backends.slurm.jobs import job_status

        return job_status(record)

    def logs(self, record: JobRecord, follow: bool, out: TextIO) -> int:
        from titan.backends.slurm.jobs import show_logs

        return show_logs(record, follow, out)

    def cancel(self, record: JobRecord) -> JobStatus:
        from titan.backends.slurm.jobs import cancel

        return cancel(record)


def job_name(job: PreparedJob) -> str:
    """The job's name in ``titan jobs`` (unique among them) and, unless slurm.job_name is set,
    in Slurm: job.description if set, else the config file's stem, else ``<model>-<flavor>``."""
    from titan.core import jobs

    base = job.config.slurm.job_name or jobs.job_name(job)
    return jobs.unique_name(base, jobs.job_store())


def submitted_argv() -> list[str]:
    """The arguments of this ``titan run`` (after ``run``); [] when not run from the command line."""
    args = sys.argv[1:]
    return args[1:] if args[:1] == ["run"] else []


def _require_sbatch() -> None:
    if not shutil.which("sbatch"):
        raise ConfigError(
            "sbatch is not on PATH: submit from the cluster's login node (or add Slurm's "
            "bin folder to PATH); --dry-run prints the script without Slurm"
        )


def _sbatch_error(exc: Exception) -> ConfigError:
    """sbatch refused the job: one line, naming the [slurm] key to fix where it can."""
    from titan.backends.slurm.cluster import configuration_not_found

    text = " ".join(str(exc).split())
    if configuration_not_found(text):  # the environment is wrong, not the [slurm] section
        return ConfigError(configuration_not_found(text))
    message = text.split("sbatch: error:")[-1].strip() if "sbatch: error:" in text else text
    lowered = message.lower()
    if "unable to contact slurm controller" in lowered:
        return ConfigError(
            f"sbatch could not reach Slurm's controller: {message}; check that SLURM_CONF names "
            "this cluster's slurm.conf and that the controller answers (scontrol ping)"
        )
    for needle, key in _SBATCH_ERRORS:
        if needle in lowered:
            return ConfigError(f"sbatch refused the job: {message}; set {key}")
    return ConfigError(f"sbatch refused the job: {message}; fix the [slurm] section")


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"slurm": SlurmSection}


@hookimpl
def titan_register_backends(registry: BackendRegistry) -> None:
    registry.add(SlurmBackend())
