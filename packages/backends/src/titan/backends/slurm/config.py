"""The ``[slurm]`` config section and its checks, done on the login node before anything is submitted.

Torch-free and Slurm-free: ``titan config show`` and ``--dry-run`` use it anywhere.
What needs the cluster (its partitions and nodes) is in
:mod:`titan.backends.slurm.cluster`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from titan.core.errors import ConfigError


@dataclass
class SlurmSection:
    """How a job is submitted to Slurm (``--backend slurm``); see docs/slurm.md."""

    partition: str = ""
    """Partition (queue); empty: the cluster's default partition."""
    account: str = ""
    """Account to charge; empty: your default account."""
    qos: str = ""
    """Quality of service; empty: the default."""
    nodes: int = 0
    """Nodes; 0 means --nnodes (launch.nnodes, default 1)."""
    gpus_per_node: int = 8
    """GPUs requested per node (--gpus-per-node); 0 on CPU-only nodes."""
    gpu_type: str = ""
    """The nodes' GPU type as Slurm names it in its GRES (h100 in gpu:h100:8): asked of sbatch
    (--gpus-per-node=h100:8), and what titan checks memory and float8 against; empty: any GPU,
    its model read from the partition's nodes at submission."""
    cpus_per_task: int = 0
    """CPUs per rank (each rank is one Slurm task); 0: the cluster's default."""
    mem: str = ""
    """Memory per node, as sbatch --mem takes it (e.g. 200G; 0 means all of it); empty: default."""
    time: str = ""
    """Time limit, as sbatch --time takes it (minutes, HH:MM:SS, D-HH:MM:SS); empty: the
    partition's default."""
    constraint: str = ""
    """Node features the job needs (--constraint), e.g. h100."""
    exclusive: bool = False
    """Reserve whole nodes (--exclusive)."""
    job_name: str = ""
    """Slurm job name; empty: the job's name in `titan jobs` (job.description if set, else the
    config file's stem, else <model>-<flavor>, made unique among titan's jobs)."""
    sbatch: list[str] = field(default_factory=list)
    """Extra #SBATCH parameters as KEY=VALUE (or a bare KEY), e.g. reservation=big, mail-type=END."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run on the first node before training (module load ..., source venv/bin/activate)."""
    env: list[str] = field(default_factory=list)
    """Environment variables for every rank, as NAME=VALUE (e.g. NCCL_DEBUG=WARN)."""
    max_requeues: int = 3
    """Times the job requeues itself after a checkpoint on the time-limit signal."""
    signal_delay: int = 120
    """Seconds before the time limit at which Slurm sends SIGUSR2 (checkpoint, then requeue).
    Slurm checks limits about every 30 s: leave that much on top of a checkpoint's duration."""
    checkpoint: bool = True
    """Turn checkpointing on (checkpoint.enable_checkpoint) so that a preempted or requeued job
    resumes; false leaves [checkpoint] as it is."""
    folder: str = ""
    """Where submitit writes the job's scripts, pickles and logs (on a shared file system);
    empty: <job.dump_folder>/slurm."""


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def time_seconds(value: str) -> int:
    """sbatch's --time formats -> seconds (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S)."""
    match = _TIME.match(value.strip())
    if not match:
        raise ConfigError(
            f"slurm.time '{value}' is not a Slurm time; use minutes (90), HH:MM:SS (48:00:00) "
            "or D-HH:MM:SS (2-00:00:00)"
        )
    days, a, b, c = match.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-H, D-H:M, D-H:M:S
        hms = nums + [0] * (3 - len(nums))
        return int(days) * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
    if len(nums) == 1:
        return nums[0] * 60
    if len(nums) == 2:
        return nums[0] * 60 + nums[1]
    return nums[0] * 3600 + nums[1] * 60 + nums[2]


def env_pairs(entries: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise ConfigError(
                f"slurm.env entry '{entry}' is not NAME=VALUE; write e.g. NCCL_DEBUG=WARN"
            )
        out[name] = value
    return out


def sbatch_pairs(entries: list[str]) -> dict[str, Any]:
    """``["reservation=big", "requeue"]`` -> ``{"reservation": "big", "requeue": True}``."""
    out: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.removeprefix("--").partition("=")
        if not key or not re.match(r"^[a-z][a-z0-9-]*$", key):
            raise ConfigError(
                f"slurm.sbatch entry '{entry}' is not an sbatch option; write KEY=VALUE as in "
                "'#SBATCH --KEY=VALUE' (e.g. reservation=big) or a bare KEY"
            )
        out[key] = value if sep else True
    return out


_GPU_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_MEM = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)


def mem_megabytes(value: str) -> int | None:
    """sbatch's ``--mem`` (``200G``, ``500000``: megabytes) in MiB; None for 0 (all) or empty."""
    match = _MEM.match(value.strip())
    if not match:
        raise ConfigError(
            f"slurm.mem '{value}' is not a memory size as sbatch takes it; write e.g. 200G, "
            "500000M or 0 (all of each node's memory)"
        )
    number, unit = int(match.group(1)), match.group(2).upper()
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]
    return max(int(number * scale), 1) if number else None


def node_counts(config: Any) -> tuple[int, int]:
    """Nodes, and processes (ranks, Slurm tasks) per node, from [slurm] and [launch].

    The one place the Slurm backend's world size comes from: its launch
    layout (:mod:`titan.backends.slurm.cluster`) and, through it, the sbatch
    script and the checks of ``titan run``.
    """
    s, launch = config.slurm, config.launch
    if s.nodes < 0 or s.gpus_per_node < 0 or s.cpus_per_task < 0:
        raise ConfigError("slurm.nodes, slurm.gpus_per_node and slurm.cpus_per_task must be >= 0")
    if s.nodes and launch.nnodes not in (1, s.nodes):
        raise ConfigError(
            f"--nnodes {launch.nnodes} and slurm.nodes {s.nodes} disagree; pass only one of them"
        )
    nodes = s.nodes or launch.nnodes
    nproc = launch.nproc_per_node or s.gpus_per_node or 1
    if s.gpus_per_node and nproc > s.gpus_per_node:
        raise ConfigError(
            f"--nproc {nproc} but slurm.gpus_per_node is {s.gpus_per_node}; one rank needs one "
            f"GPU, so pass --nproc {s.gpus_per_node} or less, or raise slurm.gpus_per_node"
        )
    return nodes, nproc


def gpus_option(config: Any) -> int | str:
    """What ``--gpus-per-node`` gets: the count, or ``TYPE:COUNT`` with slurm.gpu_type."""
    s = config.slurm
    return f"{s.gpu_type}:{s.gpus_per_node}" if s.gpu_type else s.gpus_per_node


def validate(config: Any) -> None:
    """Every check of the [slurm] keys themselves (no cluster needed)."""
    s = config.slurm
    node_counts(config)
    if s.gpu_type and not _GPU_TYPE.match(s.gpu_type):
        raise ConfigError(
            f"slurm.gpu_type '{s.gpu_type}' is not a GPU type; write the type alone as Slurm "
            "names it (h100 in gpu:h100:8); the count is slurm.gpus_per_node"
        )
    if s.gpu_type and not s.gpus_per_node:
        raise ConfigError(
            f"slurm.gpu_type is '{s.gpu_type}' but slurm.gpus_per_node is 0 (CPU nodes); set "
            "--slurm.gpus_per_node (e.g. 8) or leave slurm.gpu_type empty"
        )
    if s.max_requeues < 0:
        raise ConfigError("slurm.max_requeues must be 0 or more")
    if s.signal_delay < 1:
        raise ConfigError("slurm.signal_delay must be at least 1 (seconds before the time limit)")
    if s.time:
        limit = time_seconds(s.time)
        if limit <= s.signal_delay:
            raise ConfigError(
                f"slurm.time {s.time} ({limit} s) leaves no time before the checkpoint signal "
                f"(slurm.signal_delay = {s.signal_delay} s before the end); raise slurm.time "
                "or lower slurm.signal_delay"
            )
    if s.mem:
        mem_megabytes(s.mem)
    env_pairs(s.env)
    sbatch_pairs(s.sbatch)
