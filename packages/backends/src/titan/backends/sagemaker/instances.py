"""SageMaker training instance types: GPUs per instance, their model, EFA, price; the launch layout.

:func:`launch_layout` turns ``[sagemaker]`` into the job's
:class:`~titan.core.layout.LaunchLayout` (instances x processes, the GPU each
process gets) from this table, with no AWS call and no SDK import, so that
``titan run`` checks the degrees, the memory and float8 against it before
anything is uploaded or paid for. Every check that is about the layout
(instance count, processes per host, an instance type titan cannot train on)
lives here, once; :func:`titan.backends.sagemaker.request.plan` uses the same
layout for the request.

GPU counts and models: the published specifications of each instance family
(https://aws.amazon.com/ec2/instance-types/p5/, /p4/, /p3/, /p6/, /g5/, /g6/,
/g6e/, /g4/); SageMaker's ``ml.`` types are the same hardware. Torch-free and
SDK-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from titan.core.errors import ConfigError
from titan.core.layout import GPU_MODELS, Device, GpuModel, LaunchLayout, gpu_model


@dataclass(frozen=True)
class InstanceType:
    """One SageMaker training instance type."""

    name: str
    gpus: int
    """GPUs per instance: torchrun's processes per host by default."""
    gpu: str
    """The GPU model, by its name in :data:`titan.core.layout.GPU_MODELS`."""
    efa: bool = False
    """Has EFA: titan sets the NCCL-over-EFA variables (``[sagemaker] efa``)."""
    usd_per_hour: float | None = None
    """On-demand training price in us-east-1 (for cost estimates); None: not stated."""

    @property
    def model(self) -> GpuModel:
        found = gpu_model(self.gpu)
        assert found is not None, self.gpu  # the table below names only known models
        return found


def _family(
    prefix: str, gpu: str, sizes: dict[str, int], efa: tuple[str, ...] = ()
) -> dict[str, InstanceType]:
    return {
        f"ml.{prefix}.{size}": InstanceType(f"ml.{prefix}.{size}", n, gpu, size in efa)
        for size, n in sizes.items()
    }


# Prices: the on-demand "Training" figures of https://aws.amazon.com/sagemaker/ai/pricing/
# for us-east-1 are the source to use. They are left None here: the page could not be
# read when this table was written, and AWS changed GPU instance prices in 2025 (P4/P5
# cuts), so remembered figures would be stale. Fill one in only with the figure read from
# that page and the date it was read, e.g. ``usd_per_hour=...,  # pricing page, 2026-..``.
_G_SIZES = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1} | {
    "12xlarge": 4,
    "24xlarge": 4,
    "48xlarge": 8,
}
"""GPUs of each size of the G5, G6 and G6e families: 1 up to 16xlarge, 4 at 12/24xlarge, 8 at 48."""

INSTANCE_TYPES: dict[str, InstanceType] = {
    # P6: 8 x B200, EFA (3200 Gbps)
    **_family("p6-b200", "B200", {"48xlarge": 8}, efa=("48xlarge",)),
    # P5: 8 x H100 SXM 80GB, EFA (3200 Gbps); p5.4xlarge: 1 x H100
    **_family("p5", "H100 SXM 80GB", {"48xlarge": 8, "4xlarge": 1}, efa=("48xlarge",)),
    # P5e / P5en: 8 x H200 141GB, EFA
    **_family("p5e", "H200", {"48xlarge": 8}, efa=("48xlarge",)),
    **_family("p5en", "H200", {"48xlarge": 8}, efa=("48xlarge",)),
    # P4d: 8 x A100 40GB; P4de: 8 x A100 80GB; EFA (400 Gbps)
    **_family("p4d", "A100 40GB", {"24xlarge": 8}, efa=("24xlarge",)),
    **_family("p4de", "A100 80GB", {"24xlarge": 8}, efa=("24xlarge",)),
    # P3: V100 16GB (1, 4, 8); P3dn: 8 x V100 32GB, EFA
    **_family("p3", "V100 16GB", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    **_family("p3dn", "V100 32GB", {"24xlarge": 8}, efa=("24xlarge",)),
    # G5: A10G 24GB; G6: L4 24GB; G6e: L40S 48GB (_G_SIZES)
    **_family(
        "g5",
        "A10G",
        _G_SIZES,
        efa=("48xlarge",),
    ),
    **_family(
        "g6",
        "L4",
        _G_SIZES,
        efa=("48xlarge",),
    ),
    **_family(
        "g6e",
        "L40S",
        _G_SIZES,
        efa=("48xlarge",),
    ),
    # G4dn: T4 16GB (1 up to 16xlarge, 4 at 12xlarge)
    **_family(
        "g4dn",
        "T4",
        {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4},
    ),
}

NOT_CUDA = re.compile(r"^ml\.(trn|inf)\d")
"""Trainium / Inferentia: AWS's own accelerators (Neuron SDK), not CUDA devices."""
CPU_ONLY = re.compile(r"^ml\.[cmrt]\d+[a-z-]*\.")
"""General purpose, compute and memory optimized, burstable: no accelerator."""
TOO_OLD = re.compile(r"^ml\.p2\.")
"""K80 (compute capability 3.7): current PyTorch CUDA builds no longer run on it."""

PICK = "pick a GPU type such as ml.p5.48xlarge, ml.p4d.24xlarge or ml.g5.12xlarge"


@dataclass(frozen=True)
class Instances:
    """What ``[sagemaker]`` runs on: the instance type's GPUs, as the table and overrides say."""

    instance_type: str
    gpus: int
    model: GpuModel
    efa: bool


def resolve_instance(sec: Any) -> Instances:
    """The GPUs of ``sec.instance_type``: the table, overridden by ``gpus_per_instance`` /
    ``gpu_model``; one-line ConfigError for a type titan cannot train on."""
    name = sec.instance_type
    if NOT_CUDA.match(name):
        raise ConfigError(
            f"sagemaker.instance_type {name} has AWS Trainium/Inferentia accelerators; titan "
            f"trains on NVIDIA GPUs through CUDA and NCCL: {PICK}"
        )
    if CPU_ONLY.match(name):
        raise ConfigError(f"sagemaker.instance_type {name} has no GPU; {PICK}")
    if TOO_OLD.match(name):
        raise ConfigError(
            f"sagemaker.instance_type {name} has K80 GPUs, which current PyTorch no longer "
            f"supports; {PICK}"
        )
    if sec.gpus_per_instance < 0:
        raise ConfigError(
            f"sagemaker.gpus_per_instance is {sec.gpus_per_instance}; pass the GPUs of one "
            f"{name} (or 0: from titan's table)"
        )
    known = INSTANCE_TYPES.get(name)
    if known is None and not (sec.gpus_per_instance and sec.gpu_model):
        raise ConfigError(
            f"titan does not know the GPUs of sagemaker.instance_type {name}; pass both "
            "--sagemaker.gpus_per_instance=N and --sagemaker.gpu_model=NAME (e.g. H100), "
            f"or {PICK}"
        )
    if known is None:
        return Instances(name, sec.gpus_per_instance, _override_model(sec.gpu_model), False)
    model = _override_model(sec.gpu_model) if sec.gpu_model else known.model
    return Instances(name, sec.gpus_per_instance or known.gpus, model, known.efa)


def _override_model(name: str) -> GpuModel:
    model = gpu_model(name)
    if model is None:
        names = ", ".join(m.name for m in GPU_MODELS)
        raise ConfigError(
            f"sagemaker.gpu_model '{name}' is not a GPU titan knows; use one of: {names}"
        )
    return model


def launch_layout(job: Any) -> LaunchLayout:
    """The job's layout on SageMaker: ``instance_count`` x processes per host, one GPU each."""
    sec = job.config.sagemaker
    count = sec.instance_count
    if count < 1:
        raise ConfigError(
            f"sagemaker.instance_count is {count}; pass --sagemaker.instance_count=1 or more"
        )
    inst = resolve_instance(sec)
    if sec.processes_per_host < 0:
        raise ConfigError(
            f"sagemaker.processes_per_host is {sec.processes_per_host}; pass 0 (one per GPU) "
            "or a positive number"
        )
    if sec.processes_per_host > inst.gpus:
        raise ConfigError(
            f"sagemaker.processes_per_host is {sec.processes_per_host}, but {inst.instance_type} "
            f"has {inst.gpus} GPU(s); pass --sagemaker.processes_per_host={inst.gpus} (or 0: one "
            "per GPU), or pick an instance type with more GPUs"
        )
    if count > 1 and job.config.checkpoint.async_mode != "disabled":
        raise ConfigError(
            "checkpoint.async_mode=async is not supported on SageMaker jobs of several instances "
            "(each host publishes its own part of a checkpoint after the save); pass "
            "--checkpoint.async_mode=disabled"
        )
    return LaunchLayout(
        nodes=count,
        procs_per_node=sec.processes_per_host or inst.gpus,
        device=Device.gpu(inst.model),
        where=f"{count} x {inst.instance_type}",
        procs_option="--sagemaker.processes_per_host={n}",
        nodes_option="--sagemaker.instance_count={n}",
        max_procs_per_node=inst.gpus,
    )
