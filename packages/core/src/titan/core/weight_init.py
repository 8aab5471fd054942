"""Materialising a model built on the meta device and giving it its initial weights.

Apart from the trainer because where the initial weights come from depends on the
layout: one process initialises on the CPU, sharded runs either initialise their shards
in place or scatter a full model initialised on rank 0, and runs resuming from a
checkpoint skip the work whose result the checkpoint overwrites. The initialisation
draws from its own generator seeded with ``training.seed``, so the training RNG stream
does not depend on how the model was initialised.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from titan.core.folders import complete_checkpoints
from titan.core.parallel import init_full_model_on_rank0


def init_weights(
    model: torch.nn.Module,
    config: Any,
    device: torch.device,
    *,
    rank: int,
    build_full: Callable[[], torch.nn.Module],
    tell: Callable[[str], None],
) -> None:
    """Materialise and initialise the weights of ``model`` (on the meta device, maybe sharded).

    On one process: on the CPU, then moved to ``device``. Sharded (FSDP/TP): every rank
    initialising its own shard gives other weights than one process (on CPU every shard
    even repeats the same random numbers), so for small models rank 0 initialises the full
    model (``build_full()``, on its CPU) and the shards are scattered from it; large
    models, and runs whose weights come from a checkpoint, initialise their shards in
    place on the device (``parallelism.init_full_model_on_rank0``). ``tell`` prints a
    notice (rank 0 only).
    """
    from torch.distributed.tensor import DTensor

    seed = config.training.seed
    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    devices = [device] if device.type == "cuda" else []
    if not sharded:
        model.to_empty(device="cpu")
        seeded_init(model, seed, torch.device("cpu"))
        model.to(device)
        return
    model.to_empty(device=device)
    from_checkpoint = weights_come_from_checkpoint(config)
    n_params = sum(p.numel() for p in model.parameters())  # DTensor: the global count
    from_rank0 = init_full_model_on_rank0(
        config.parallelism.init_full_model_on_rank0, n_params, from_checkpoint
    )
    if not from_rank0 and not from_checkpoint and config.parallelism.init_full_model_on_rank0:
        tell(
            f"initialising each rank's shards on {device.type} ({n_params / 1e9:.1f}B "
            "parameters): weights differ from a single-process run's; "
            "--parallelism.init_full_model_on_rank0=true builds them on rank 0 instead"
        )
    with warnings.catch_warnings():
        if from_rank0 or from_checkpoint:  # the shards' random values are overwritten
            warnings.filterwarnings("ignore", message=".*DTensor random operators.*")
        seeded_init(model, seed, device, devices)  # buffers, and shards if not from rank 0
    if from_rank0:
        load_full_init_from_rank0(model, seed, rank=rank, build_full=build_full)


def weights_come_from_checkpoint(config: Any) -> bool:
    """Whether ``train()`` will overwrite the initial weights (resume or initial_load_path)."""
    ck = config.checkpoint
    if ck.initial_load_path:
        return True
    folder = Path(config.job.dump_folder) / ck.folder
    return ck.enable_checkpoint and bool(complete_checkpoints(folder))


def seeded_init(
    model: torch.nn.Module,
    seed: int,
    buffer_device: torch.device,
    rng_devices: Sequence[Any] = (),
) -> None:
    """``init_weights`` from ``seed``, leaving the training RNG stream untouched."""
    with torch.random.fork_rng(devices=list(rng_devices)), torch.no_grad():
        torch.manual_seed(seed)
        model.init_weights(buffer_device=buffer_device)


def load_full_init_from_rank0(
    model: torch.nn.Module,
    seed: int,
    *,
    rank: int,
    build_full: Callable[[], torch.nn.Module],
) -> None:
    """Rank 0 initialises an unsharded CPU copy; its tensors are broadcast into the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full: dict[str, Any] = {}
    if rank == 0:
        with torch.device("cpu"):
            reference = build_full()
        seeded_init(reference, seed, torch.device("cpu"))
        full = reference.state_dict()
        del reference
    set_model_state_dict(
        model,
        full,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
