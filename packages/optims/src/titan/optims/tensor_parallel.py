"""tp: tensor parallel with sequence parallel and loss parallel on the mesh's "tp" dimension.

The Megatron layout, with torch's ``parallelize_module``: in each block the
q/k/v and w1/w3 projections are split by output columns and wo/w2 by input
rows, so attention heads and FFN hidden units are divided among the TP ranks
and each block needs one all-gather and one reduce-scatter per direction.
Between blocks the activations, and the norms, are sharded along the sequence
(sequence parallel), which divides their memory and makes every parameter a
DTensor: optimizers with ``foreach`` and gradient clipping cannot mix plain
tensors and DTensors. The output layer keeps the logits sharded over the
vocabulary and the cross-entropy is computed on the shards (loss parallel),
so the full logits are never gathered.

When a block's linears are tensorwise Float8Linear (fp8), torchao's float8
styles are used: activations are cast to float8 *before* the all-gather, so
TP communication moves float8 too. Rowwise recipes use the plain styles.

Activated with ``--plugins tp``; the TP degree is
``parallelism.tensor_parallel_degree`` (> 1). With FSDP on the remaining
ranks it is 2-D parallelism (FSDP x TP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from titan.core import hookimpl
from titan.optims._common import say_once, transformer_blocks

_BLOCK_LINEARS = (
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)


@dataclass
class TensorParallelConfig:
    loss_parallel: bool = True
    """Compute the cross-entropy on vocabulary shards instead of gathering the logits."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"tp": TensorParallelConfig}


def divisibility_problems(args: Any, tp: int, seq_len: int) -> list[str]:
    """What the TP degree does not divide: heads, kv heads, FFN size, vocabulary, sequence."""
    sizes = {
        "attention heads (n_heads)": getattr(args, "n_heads", None),
        "kv heads (n_kv_heads)": getattr(args, "kv_heads", getattr(args, "n_kv_heads", None)),
        "FFN hidden size": getattr(args, "ffn_hidden_dim", None),
        "vocabulary size": getattr(args, "vocab_size", None),
        "training.seq_len (sequence parallel)": seq_len,
    }
    return [f"{what} {n}" for what, n in sizes.items() if isinstance(n, int) and n % tp]


@hookimpl
def titan_configure(config: Any, layout: Any) -> None:
    """Active with no degree given: take every process not used for replication.

    On several nodes, the processes of one node (TP's all-gathers and
    reduce-scatters run every layer: they stay on the node's fast links).
    """
    from titan.core.errors import ConfigError

    p = config.parallelism
    if p.tensor_parallel_degree > 1:
        return
    world, replicate = layout.world_size, p.data_parallel_replicate_degree
    if world == 1 or p.data_parallel_shard_degree != -1 or world % replicate:
        raise ConfigError(
            f"plugin 'tp' is active but parallelism.tensor_parallel_degree is "
            f"{p.tensor_parallel_degree}; set it to the number of processes that share "
            f"each layer, e.g. --parallelism.tensor_parallel_degree=2 with "
            f"{layout.more_processes(2)}"
        )
    per_node = layout.procs_per_node if layout.nodes > 1 else world // replicate
    p.tensor_parallel_degree = per_node
    config.notes.append(
        f"tp: parallelism.tensor_parallel_degree was 1; using {per_node} "
        f"({'the processes of each node' if layout.nodes > 1 else f'all {world} processes'}; "
        "set the degree to combine TP with FSDP)"
    )


@hookimpl
def titan_validate_config(config: Any, model_args: Any) -> None:
    """The degree divides the model's heads, FFN, vocabulary and sequence.

    A degree of 1 with this plugin active was filled in by ``titan_configure``.
    """
    _raise_if_indivisible(model_args, config.parallelism.tensor_parallel_degree, config)


def _raise_if_indivisible(args: Any, tp: int, config: Any) -> None:
    from titan.core.errors import ConfigError

    problems = divisibility_problems(args, tp, config.training.seq_len)
    if problems:
        raise ConfigError(
            f"tensor_parallel_degree {tp} does not divide {', '.join(problems)} "
            f"(model {config.model.name}/{config.model.flavor}); choose a degree that "
            "divides all of them"
        )


def _uses_float8_tensorwise(block: Any) -> bool:
    """All of the block's linears are Float8Linear with tensorwise (dynamic) scaling."""
    try:
        from torchao.float8.config import ScalingGranularity
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:  # torchao missing: no float8 modules either
        return False
    for name in _BLOCK_LINEARS:
        m = block.get_submodule(name)
        if not isinstance(m, Float8Linear):
            return False
        for cast in (m.config.cast_config_input, m.config.cast_config_weight):
            if cast.scaling_granularity is not ScalingGranularity.TENSORWISE:
                return False
    return True


def float8_collectives_supported(mesh: Any) -> bool:
    """Whether the TP process group can all-gather float8 tensors (gloo cannot)."""
    import torch.distributed as dist

    return dist.get_backend(mesh.get_group()) != "gloo"


def _styles(float8: bool) -> tuple[Any, Any, Any]:
    if float8:
        from torchao.float8.float8_tensor_parallel import (
            Float8ColwiseParallel,
            Float8RowwiseParallel,
            PrepareFloat8ModuleInput,
        )

        return Float8ColwiseParallel, Float8RowwiseParallel, PrepareFloat8ModuleInput
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
    )

    return ColwiseParallel, RowwiseParallel, PrepareModuleInput


def embedding_style() -> Any:
    """RowwiseParallel for the token embedding, its reduce-scatter waited for at once.

    torch's RowwiseParallel starts the output reduce-scatter asynchronously and
    hands the first block an ``AsyncCollectiveTensor``. When that block is
    compiled, the gradient coming back out of the compiled graph reaches the
    redistribute as a plain tensor and backward fails ("'Tensor' object has no
    attribute '_local_tensor'", torch 2.15). The next op needs the result
    immediately anyway, so waiting costs no overlap.
    """
    from torch.distributed.tensor.parallel import RowwiseParallel

    class SyncRowwiseParallel(RowwiseParallel):
        @staticmethod
        def _prepare_output_fn(
            output_layouts: Any, use_local_output: bool, mod: Any, outputs: Any, device_mesh: Any
        ) -> Any:
            if outputs.placements != output_layouts:
                outputs = outputs.redistribute(placements=output_layouts, async_op=False)
            return outputs.to_local() if use_local_output else outputs

    return SyncRowwiseParallel


def block_plan(float8: bool) -> dict[str, Any]:
    """The parallel style of each submodule of a Llama block (sequence parallel between)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import SequenceParallel

    colwise, rowwise, prepare_input = _styles(float8)
    return {
        "attention_norm": SequenceParallel(),
        # Block input arrives sharded on the sequence; attention needs all of it.
        "attention": prepare_input(
            input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)
        ),
        "attention.wq": colwise(),
        "attention.wk": colwise(),
        "attention.wv": colwise(),
        "attention.wo": rowwise(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward": prepare_input(
            input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)
        ),
        "feed_forward.w1": colwise(),
        "feed_forward.w2": rowwise(output_layouts=Shard(1)),
        "feed_forward.w3": colwise(),
    }


@hookimpl
def titan_apply_tensor_parallel(model: Any, config: Any, parallel: Any, loss: Any) -> None:
    """Shard embeddings, blocks, final norm and output over ``parallel.mesh['tp']``."""
    import warnings

    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    from titan.core.errors import ConfigError

    # DTensor warns that its RNG on a CPU mesh "may not be complete": init_weights draws
    # the same full-size values on every rank and shards them, which is what we want.
    warnings.filterwarnings("ignore", message="DTensor random operators may not have complete")
    if parallel.tp <= 1 or parallel.mesh is None:
        raise ConfigError(
            f"plugin 'tp' needs parallelism.tensor_parallel_degree > 1 and as many processes; "
            f"this run has degree {parallel.tp} on {parallel.world_size} process(es): "
            "launch with --nproc and set the degree"
        )
    args = getattr(model, "args", None)
    if args is not None:
        _raise_if_indivisible(args, parallel.tp, config)
    tp_mesh = parallel.mesh["tp"]
    loss_parallel = config.tp.loss_parallel
    if getattr(getattr(model, "output", None), "returns_hidden_states", False):
        # The output layer makes no logits (chunked-loss computes them in the loss, one
        # vocabulary slice per rank): its weight is still split over the vocabulary, and
        # the hidden states it passes on stay a replicated DTensor, whose gradient may
        # come back as a partial sum (one per vocabulary slice) to be reduce-scattered.
        output = ColwiseParallel(
            input_layouts=Shard(1), output_layouts=Replicate(), use_local_output=False
        )
    else:
        output = ColwiseParallel(
            input_layouts=Shard(1),
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        )
    parallelize_module(
        model,
        tp_mesh,
        {
            "tok_embeddings": embedding_style()(input_layouts=Replicate(), output_layouts=Shard(1)),
            "norm": SequenceParallel(),
            "output": output,
        },
    )
    blocks = transformer_blocks(model)
    float8_ok = float8_collectives_supported(tp_mesh)
    float8_blocks = 0
    for block in blocks.values():
        float8 = _uses_float8_tensorwise(block)
        if float8 and not float8_ok:
            say_once(
                "tp: gloo cannot all-gather float8 tensors, so on this CPU run the TP "
                "collectives stay in high precision (the float8 matmuls still run); "
                "with NCCL they move float8"
            )
            float8 = False
        float8_blocks += float8
        parallelize_module(block, tp_mesh, block_plan(float8))
    if loss_parallel:
        loss.wrap(_local_loss)
    styles = f"; float8 all-gathers in {float8_blocks} blocks" if float8_blocks else ""
    say_once(
        f"tp: tensor parallel degree {parallel.tp} with sequence parallel"
        f"{' and loss parallel' if loss_parallel else ''}{styles}"
    )


@hookimpl
def titan_train_context(trainer: Any) -> list[Any]:
    """Loss parallel: cross-entropy on vocabulary-sharded logits, forward and backward."""
    if not trainer.config.tp.loss_parallel or trainer.parallel.tp <= 1:
        return []
    from torch.distributed.tensor.parallel import loss_parallel

    return [loss_parallel()]


def _local_loss(loss_fn: Any) -> Any:
    """Make the loss a plain tensor again, as the trainer (and other plugins) expect.

    Under loss parallel the cross-entropy of sharded logits is a replicated
    DTensor; its local value *is* the loss, and backward through ``to_local``
    still runs inside the loss-parallel context.
    """

    def local_loss(logits: Any, labels: Any) -> Any:
        loss = loss_fn(logits, labels)
        return loss.to_local() if hasattr(loss, "to_local") else loss

    return local_loss
