"""The sbatch script of a titan job: submitit's executor parameters, and their rendering.

Submission goes through submitit (``SlurmExecutor``); ``--dry-run`` renders the
script with the very function submitit uses for it (``_make_sbatch_string``),
from the same parameters, so what it prints is what ``sbatch`` would get, and
it needs neither Slurm nor a network nor a writable disk.

Layout: one Slurm task per rank (``--ntasks-per-node`` = processes per node),
each running the pickled :func:`titan.backends.slurm.task.run_rank` through
``srun``. See docs/slurm.md for why not torchrun.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Any

from titan.backends.slurm.config import env_pairs, gpus_option, sbatch_pairs, time_seconds
from titan.core.layout import LaunchLayout

SUBMITIT_ENTRY = "-u -m submitit.core._submit"
"""What submitit's executor runs on every task (``SlurmExecutor._submitit_command_str``)."""


def submitit_folder(config: Any) -> Path:
    """Where submitit keeps the job's script, pickles and per-task logs (shared file system)."""
    folder = config.slurm.folder or str(Path(config.job.dump_folder) / "slurm")
    return Path(folder).expanduser().absolute()


def executor_parameters(config: Any, lay: LaunchLayout, job_name: str = "") -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords for this job (Slurm's own names).

    The Slurm job name: slurm.job_name, else ``job_name`` (the name ``titan jobs`` shows,
    :func:`titan.backends.slurm.job_name`), else job.description.
    """
    s = config.slurm
    extra: dict[str, Any] = {"requeue": True}  # the job may requeue itself (JobRequeue may be 0)
    if s.mem:
        extra["mem"] = s.mem  # submitit's own `mem` takes gigabytes as a number
    extra.update(sbatch_pairs(s.sbatch))
    params: dict[str, Any] = {
        "job_name": s.job_name or job_name or config.job.description,
        "nodes": lay.nodes,
        "ntasks_per_node": lay.procs_per_node,
        # None leaves --time out: the partition's default limit applies.
        "time": math.ceil(time_seconds(s.time) / 60) if s.time else None,
        "signal_delay_s": s.signal_delay,
        "stderr_to_stdout": True,  # one log per rank, its lines in order
        # A rank that dies takes its job step down at once, instead of leaving the others
        # waiting in a collective until their timeout.
        "srun_args": ["--kill-on-bad-exit=1"],
        "setup": [*s.setup, *(f"export {k}={shlex.quote(v)}" for k, v in env_pairs(s.env).items())]
        or None,
        "additional_parameters": extra,
    }
    optional = {
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "constraint": s.constraint,
        "cpus_per_task": s.cpus_per_task,
        # h100:8 with slurm.gpu_type: sbatch then picks nodes with that GRES type
        "gpus_per_node": gpus_option(config) if s.gpus_per_node else None,
        "exclusive": s.exclusive,
    }
    params.update({k: v for k, v in optional.items() if v})
    return params


def submitit_command(folder: Path, python: str | None = None) -> str:
    """The command line submitit puts after ``srun`` (its executor's, for ``python``)."""
    return " ".join(
        [python or shlex.quote(sys.executable), SUBMITIT_ENTRY, shlex.quote(str(folder))]
    )


def render_sbatch(config: Any, lay: LaunchLayout, job_name: str = "") -> str:
    """The exact script ``sbatch`` gets for this job (submitit's own renderer, no Slurm needed)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = submitit_folder(config)
    return _make_sbatch_string(
        command=submitit_command(folder),
        folder=folder,
        **executor_parameters(config, lay, job_name),
    )
