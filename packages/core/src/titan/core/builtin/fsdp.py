"""FSDP2 data parallelism: ``fully_shard`` per transformer block, then the root (HSDP when replicated).

Each parameter becomes a DTensor sharded on dim 0 across the ``dp_shard``
mesh dimension; with ``data_parallel_replicate_degree > 1`` the mesh is the
2-D ``(dp_replicate, dp_shard)`` mesh and FSDP2 does hybrid sharding (shard
within a group, all-reduce gradients across groups). Sharding per block first
lets FSDP2 all-gather one block's weights at a time and overlap that with
the previous block's compute. As in torchtitan v0.2.2, the token embeddings
are a unit of their own and the final norm with the output projection another
(so neither stays gathered from the first forward to the end of backward, and
their gradients are reduce-scattered while the blocks' backward still runs);
the root call then covers what is left (buffers).

Other plugins rely on :func:`apply_fsdp` (tensor parallel for 2-D, float8
all-gather), so its signature is kept stable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from titan.core import hookimpl

if TYPE_CHECKING:
    import torch

    from titan.core.config.job import JobConfig
    from titan.core.parallel import ParallelDims

AUTOLOAD = True

ReshardPolicy = Literal["default", "always", "never"]


def fsdp_mesh(parallel: ParallelDims) -> Any:
    """The mesh FSDP2 shards over, or None when there is no data parallelism.

    1-D ``dp_shard`` for plain FSDP; 2-D ``(dp_replicate, dp_shard)`` for HSDP
    (FSDP2 reads a 2-D mesh as replicate x shard).
    """
    if parallel.mesh is None or parallel.dp_degree == 1:
        return None
    if parallel.dp_replicate > 1:
        return parallel.mesh["dp_replicate", "dp_shard"]
    return parallel.mesh["dp_shard"]


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks: titan models keep them in ``model.layers`` (dict or list)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        return []
    return list(layers.values()) if hasattr(layers, "values") else list(layers)


def _reshard_flags(policy: ReshardPolicy | bool, n_blocks: int) -> list[bool]:
    """Per-block ``reshard_after_forward``.

    "default" frees every block's gathered weights after its forward except
    the last block's: backward starts with that block, so re-gathering them
    would only cost an extra all-gather. "always" frees all (least memory),
    "never" keeps all gathered (ZeRO-2 like: no backward all-gathers, most memory).
    """
    if isinstance(policy, bool):
        return [policy] * n_blocks
    if policy == "always":
        return [True] * n_blocks
    if policy == "never":
        return [False] * n_blocks
    return [i < n_blocks - 1 for i in range(n_blocks)]


def apply_fsdp(
    model: torch.nn.Module,
    mesh: Any,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    reshard_after_forward: ReshardPolicy | bool = "default",
) -> torch.nn.Module:
    """Shard ``model`` in place with FSDP2 over ``mesh`` (1-D: FSDP, 2-D: HSDP).

    ``param_dtype`` is the dtype weights are all-gathered and computed in
    (bf16 for mixed precision), ``reduce_dtype`` the dtype gradients are
    reduced in (fp32 keeps the sum accurate). No gradient divide factor is
    set: gloo has no PREMUL_SUM, and FSDP2's default averaging is correct.
    """
    from torch import nn
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    always = reshard_after_forward is True or reshard_after_forward == "always"
    never = reshard_after_forward is False or reshard_after_forward == "never"
    embeddings = getattr(model, "tok_embeddings", None)
    if isinstance(embeddings, nn.Module):
        # Its own unit: gathered for the first forward and freed right after it, and
        # its gradient reduce-scattered as soon as backward reaches it.
        fully_shard(embeddings, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=not never)
    blocks = _blocks(model)
    for block, reshard in zip(
        blocks, _reshard_flags(reshard_after_forward, len(blocks)), strict=True
    ):
        fully_shard(block, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard)
    head = [getattr(model, name, None) for name in ("norm", "output")]
    if all(isinstance(m, nn.Module) for m in head):
        # One unit for the head: backward starts with it, so by default its gathered
        # weights are kept from forward (torchtitan's choice); its gradients are
        # reduce-scattered while the blocks' backward runs, not at the very end.
        fully_shard(head, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=always)
    # The root now holds only what is left (buffers such as the rotary table).
    fully_shard(model, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=always)
    return model


def _dtype(name: str) -> torch.dtype:
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


@hookimpl
def titan_apply_data_parallel(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> None:
    mesh = fsdp_mesh(parallel)
    if mesh is None:
        return
    apply_fsdp(
        model,
        mesh,
        param_dtype=_dtype(config.training.mixed_precision_param),
        reduce_dtype=_dtype(config.training.mixed_precision_reduce),
        reshard_after_forward=config.parallelism.fsdp_reshard_after_forward,
    )
