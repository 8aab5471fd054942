"""Process-group setup and the device mesh, built once from ``[parallelism]``.

The mesh always has the three named dimensions ``dp_replicate``, ``dp_shard``
and ``tp`` (size-1 dimensions cost nothing), so plugins can always ask for
``parallel.mesh["tp"]`` without checking what exists.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from titan.core.layout import resolve_degrees  # checked before launch too

MESH_DIMS = ("dp_replicate", "dp_shard", "tp")


@dataclass
class ParallelDims:
    """Who this rank is and how the world is split between parallel dimensions."""

    world_size: int
    rank: int
    local_rank: int
    dp_replicate: int
    dp_shard: int
    tp: int
    device: torch.device
    mesh: Any = None  # torch.distributed.device_mesh.DeviceMesh when world_size > 1

    @property
    def dp_degree(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def dp_rank(self) -> int:
        if self.mesh is None:
            return 0
        return (
            self.mesh["dp_replicate"].get_local_rank() * self.dp_shard
            + self.mesh["dp_shard"].get_local_rank()
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @functools.cached_property
    def dp_mesh(self) -> Any:
        """The flattened data-parallel mesh (replicate x shard), for reducing metrics."""
        return self.mesh["dp_replicate", "dp_shard"]._flatten("dp")


FULL_INIT_MAX_PARAMS = 1_000_000_000
"""Above this many parameters, ``init_full_model_on_rank0 = "auto"`` initialises shards in place.

One billion fp32 parameters are 4 GB on rank 0's CPU (plus the time to
initialise them on one core and broadcast them); Llama 3 8B would need 32 GB,
70B 280 GB, 405B 1.6 TB."""


def init_full_model_on_rank0(setting: bool | str, n_params: int, from_checkpoint: bool) -> bool:
    """Whether rank 0 initialises the whole model and scatters it (else: every rank its shards).

    ``setting`` is ``parallelism.init_full_model_on_rank0``: true or false as
    given; ``"auto"`` (the default) chooses the full copy on rank 0 only when
    it is worth it: the weights are not about to be overwritten by a
    checkpoint (``from_checkpoint``) and the model is small enough
    (:data:`FULL_INIT_MAX_PARAMS`). Small models thereby get the same initial
    weights for any number of ranks; large ones initialise on their devices.
    """
    if setting != "auto":
        return bool(setting)
    return not from_checkpoint and n_params <= FULL_INIT_MAX_PARAMS


def cuda_index(local_rank: int, visible: int) -> int:
    """The index, among the ``visible`` GPUs, that the rank with ``local_rank`` computes on.

    Usually each process of a node sees all of the node's GPUs and takes the one of its
    local rank. A launcher that binds one GPU to each task (Slurm's ``--gpu-bind=single:1``
    or per-task ``CUDA_VISIBLE_DEVICES``) leaves each process one visible GPU: index 0.
    """
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise RuntimeError(
        f"local rank {local_rank} sees {visible} GPU(s) (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most {visible} "
        "processes per node, or give each process one GPU"
    )


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        index = cuda_index(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_parallel(dp_replicate: int, dp_shard: int, tp: int) -> ParallelDims:
    """Join the process group (when launched by torchrun) and build the device mesh."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dp_replicate, dp_shard, tp = resolve_degrees(world_size, dp_replicate, dp_shard, tp)
    device = _device(local_rank)
    mesh = None
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (dp_replicate, dp_shard, tp), mesh_dim_names=MESH_DIMS)
    return ParallelDims(world_size, rank, local_rank, dp_replicate, dp_shard, tp, device, mesh)


def shutdown_parallel() -> None:
    """Leave the process group after a finished run.

    All ranks meet at a barrier first: without it gloo sometimes aborts one
    rank at teardown ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
