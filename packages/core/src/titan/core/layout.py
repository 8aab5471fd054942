"""The launch layout: where a job's processes will run, as its backend knows it before launch.

Every backend describes its job the same way (:meth:`titan.core.registry.Backend.layout`):
how many nodes, how many processes on each, and what it knows of the device
each process gets (kind, model, memory, whether it multiplies in float8).
The local backend reads this machine; SageMaker reads its table of instance
types; Slurm reads ``[slurm]`` and, when the cluster answers, the
partition's nodes. :func:`titan.core.checks.check_job` checks every job
against its layout before anything is written, uploaded or submitted, and
the ranks check again against the same layout (``TITAN_LAUNCH_LAYOUT``).

Torch-free: the launching ``titan`` process imports it, and so do the ranks
(:mod:`titan.core.parallel` resolves the parallel degrees with
:func:`resolve_degrees`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from titan.core.errors import ConfigError

LAYOUT_ENV = "TITAN_LAUNCH_LAYOUT"
"""Environment variable through which a backend hands its ranks the layout it checked (JSON)."""

GIB = 1024**3


@dataclass(frozen=True)
class GpuModel:
    """One GPU model: what the checks before launch need to know of it."""

    name: str
    """Marketing name, as titan prints it ("H100 SXM 80GB")."""
    memory_gib: float
    """Memory per GPU as the driver reports it (nvidia-smi's total, in GiB)."""
    float8: bool
    """Float8 tensor-core matmuls: compute capability 8.9 or newer (Ada, Hopper, Blackwell)."""
    matches: tuple[str, ...]
    """Lower-case substrings that identify it in a device name or a Slurm GRES type."""


# More specific entries first: "h100 nvl" must win over "h100", "a100-40" over "a100".
GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("H100 NVL 94GB", 93.6, True, ("h100 nvl", "h100nvl", "h100_nvl")),
    GpuModel("H100 PCIe 80GB", 79.6, True, ("h100 pcie", "h100_pcie", "h100-pcie")),
    GpuModel("H100 SXM 80GB", 79.6, True, ("h100",)),
    GpuModel("H200 141GB", 140.4, True, ("h200",)),
    GpuModel("B200 180GB", 179.1, True, ("b200",)),
    GpuModel("L40S 48GB", 45.0, True, ("l40s",)),
    GpuModel("L40 48GB", 45.0, True, ("l40",)),
    GpuModel("L4 24GB", 22.5, True, ("l4",)),
    GpuModel("A100 40GB", 40.0, False, ("a100-40", "a100_40", "a100-sxm4-40", "a100 40")),
    GpuModel("A100 80GB", 80.0, False, ("a100",)),
    GpuModel("A10G 24GB", 22.5, False, ("a10g",)),
    GpuModel("A10 24GB", 22.5, False, ("a10",)),
    GpuModel("V100 32GB", 32.0, False, ("v100-32", "v100_32", "v100 32", "v100-sxm2-32")),
    GpuModel("V100 16GB", 16.0, False, ("v100",)),
    GpuModel("T4 16GB", 15.0, False, ("t4",)),
)


def gpu_model(name: str) -> GpuModel | None:
    """The GPU model a device name or Slurm GRES type (``h100``, ``NVIDIA A100-SXM4-40GB``) names."""
    lowered = name.lower()
    for model in GPU_MODELS:
        if any(m in lowered for m in model.matches):
            return model
    return None


@dataclass(frozen=True)
class Device:
    """The device one process gets. ``None`` fields: the backend could not know."""

    kind: str
    """"cuda", "cpu", or "unknown"."""
    model: str = ""
    """"H100 SXM 80GB", a CPU's model name, or "" when unknown."""
    memory_bytes: int | None = None
    """Memory this process may use: the GPU's, or on CPU its share of the machine's."""
    float8: bool | None = None
    """Native float8 matmuls; None when unknown (CPUs: titan emulates float8 there)."""

    @classmethod
    def gpu(cls, model: GpuModel) -> Device:
        return cls("cuda", model.name, int(model.memory_gib * GIB), model.float8)

    def describe(self) -> str:
        mem = f", {self.memory_bytes / GIB:.0f} GiB" if self.memory_bytes else ""
        what = {"cuda": "GPU", "cpu": "CPU"}.get(self.kind, "device")
        return f"{self.model or 'unknown ' + what}{mem}"


@dataclass(frozen=True)
class LaunchLayout:
    """Nodes x processes per node, the device of each process, and how a user changes them."""

    nodes: int
    procs_per_node: int
    device: Device
    where: str
    """What runs the job, for messages: "this machine", "2 x ml.p5.48xlarge"."""
    procs_option: str = ""
    """How to set the processes per node, with ``{n}``: "--nproc {n}"; "" when fixed."""
    nodes_option: str = ""
    """How to set the number of nodes, with ``{n}``: "--slurm.nodes={n}"; "" when fixed."""
    max_procs_per_node: int | None = None
    """The most processes a node can take (its GPUs); None: no known limit."""
    notes: tuple[str, ...] = field(default=())
    """What the backend could not know, said once before launch."""
    dump_folder_here: bool = True
    """Whether the job writes into ``job.dump_folder`` as this machine sees it (this machine, a
    cluster's shared file system): then its state (checkpoints, metrics) is checked against the
    job before launch. False for a job that writes elsewhere (SageMaker: its container, S3)."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    def more_processes(self, at_least: int) -> str:
        """How to run ``at_least`` processes: more per node where a node takes them, else more nodes."""
        per_node = math.ceil(at_least / self.nodes)
        fits = self.max_procs_per_node is None or per_node <= self.max_procs_per_node
        if self.procs_option and fits:
            return self.procs_option.format(n=per_node)
        if self.nodes_option:
            return self.nodes_option.format(n=math.ceil(at_least / self.procs_per_node))
        return f"{at_least} processes"

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, text: str) -> LaunchLayout:
        data = json.loads(text)
        data["device"] = Device(**data["device"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)


def host_memory_bytes() -> int | None:
    """This machine's memory (a cgroup limit when lower), torch-free; None if unknown."""
    total: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        total = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and (total is None or int(limit) < total):
            total = int(limit)
    except OSError:
        pass
    return total


def cpu_device(procs_per_node: int, memory_bytes: int | None = None, model: str = "") -> Device:
    """A CPU process's device: its share of the machine's memory (ranks on a node share it)."""
    memory = memory_bytes if memory_bytes is not None else host_memory_bytes()
    share = memory // max(procs_per_node, 1) if memory else None
    return Device("cpu", model, share, None)


def rank_layout(nproc_per_node: int = 0, nnodes: int = 1) -> LaunchLayout:
    """The layout a rank checks against: the one its backend checked, else its environment's.

    A backend passes its layout to the ranks in ``TITAN_LAUNCH_LAYOUT``, so
    that a rank's check prints the very line the CLI would have printed. A
    process started some other way (torchrun by hand, a test) reads
    torchrun's ``WORLD_SIZE``/``LOCAL_WORLD_SIZE``, or else the ``[launch]``
    numbers it was given (``nproc_per_node``, ``nnodes``).
    """
    text = os.environ.get(LAYOUT_ENV)
    if text:
        try:
            handed = LaunchLayout.from_env(text)
        except (ValueError, TypeError, KeyError):
            handed = None  # not titan's: describe this process instead
        world = os.environ.get("WORLD_SIZE")
        if handed is not None and (world is None or int(world) == handed.world_size):
            # A rank writes into its dump folder wherever it runs: check it there.
            return dataclasses.replace(handed, dump_folder_here=True)
        # (started some other way than its backend planned: describe this process instead)
    if "WORLD_SIZE" in os.environ:
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        nodes, procs = max(world // max(local, 1), 1), local
    else:
        nodes, procs = max(nnodes, 1), max(nproc_per_node, 1)
    return LaunchLayout(
        nodes, procs, _this_process_device(procs), "this job", procs_option="--nproc {n}"
    )


def _this_process_device(procs_per_node: int) -> Device:
    """The device this process computes on: its GPU when it has one (torch is loaded on ranks)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible == "" or not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()):
        return cpu_device(procs_per_node)
    import torch

    if not torch.cuda.is_available():
        return cpu_device(procs_per_node)
    return cuda_device(torch.cuda.current_device())


def cuda_device(index: int) -> Device:
    """A local CUDA device as torch sees it (name, memory, compute capability)."""
    import torch

    props = torch.cuda.get_device_properties(index)
    major, minor = props.major, props.minor
    model = gpu_model(props.name)
    return Device(
        "cuda", model.name if model else props.name, props.total_memory, (major, minor) >= (8, 9)
    )


# --- the parallel degrees against the layout (rank code calls this too) ------


def resolve_degrees(
    world_size: int,
    dp_replicate: int,
    dp_shard: int,
    tp: int,
    layout: LaunchLayout | None = None,
) -> tuple[int, int, int]:
    """Fill in ``dp_shard = -1`` and check that the degrees multiply to the world size.

    The one check of the degrees: the CLI runs it against the backend's
    layout before launch (:func:`titan.core.checks.check_job`), the ranks
    against theirs when they build the device mesh.
    """
    layout = layout or LaunchLayout(1, world_size, Device("unknown"), "this job")

    def fix(n: int) -> str:
        return layout.more_processes(n)

    # A node's processes: its GPUs when one node is asked for more than it has.
    per_node = layout.procs_per_node if layout.nodes > 1 else (layout.max_procs_per_node or 0)
    if per_node and tp > per_node and (layout.nodes > 1 or tp > world_size):
        raise ConfigError(
            f"parallelism.tensor_parallel_degree {tp} is larger than the {per_node} processes "
            f"per node ({layout.where}): tensor parallelism across nodes is too slow to be "
            f"useful; keep the degree at most {per_node} (shard across nodes with FSDP)"
        )
    if tp > world_size:
        raise ConfigError(
            f"parallelism.tensor_parallel_degree {tp} is larger than the {world_size} "
            f"process(es) of this run; start {tp} or more ({fix(tp)}) or lower the degree"
        )
    if dp_shard == -1:
        unit = dp_replicate * tp
        if world_size % unit:
            raise ConfigError(
                f"world size {world_size} is not divisible by data_parallel_replicate_degree "
                f"{dp_replicate} x tensor_parallel_degree {tp}; change the degrees or the "
                f"process count ({fix(-(-world_size // unit) * unit)})"
            )
        dp_shard = world_size // (dp_replicate * tp)
    if dp_shard < 1:
        raise ConfigError(
            f"config key 'parallelism.data_parallel_shard_degree' is {dp_shard}; use -1 (all "
            "processes left after replication and TP) or a positive degree"
        )
    if dp_replicate * dp_shard * tp != world_size:
        need = dp_replicate * dp_shard * tp
        fix_text = f"{fix(need)}, or " if need > world_size else ""
        raise ConfigError(
            f"parallelism degrees dp_replicate {dp_replicate} x dp_shard {dp_shard} x tp {tp} = "
            f"{need}, but {world_size} processes run ({layout.where}); make them match "
            f"({fix_text}data_parallel_shard_degree = -1)"
        )
    return dp_replicate, dp_shard, tp
