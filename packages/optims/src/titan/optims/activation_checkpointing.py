"""ac: activation checkpointing of transformer blocks (full, every n-th block, or per operator).

Applied after tensor parallel and before compile and FSDP, so that the
checkpoint wraps the sharded block and compile traces through the wrapper.

* ``mode = "full"``: every block keeps only its input and recomputes the
  rest in backward.
* ``mode = "selective"``, ``selective_ac_option = "<n>"``: full checkpointing
  of every n-th block; the others keep everything.
* ``mode = "selective"``, ``selective_ac_option = "op"``: every block, with
  torchtitan v0.2.2's per-operator policy (torch's selective checkpoint
  contexts): the outputs of every second matmul, of attention and of ``max``
  are kept; the other matmuls, float8 matmuls (``_scaled_mm``) and the cheap
  element-wise work (norms, activations, rotary embedding) are recomputed.

The memory it saves is measured once at build time on fake tensors (torch's
FakeTensorMode: the device's real kernels are chosen, nothing is allocated):
a block's forward with and without the checkpoint, under torch's
``MemTracker``. titan prints the result and logs it
as ``ac_saved_mib`` with the first step's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from titan.core import hookimpl
from titan.core.config import ConfigAlias
from titan.optims._common import say_once, transformer_blocks


@dataclass
class ActivationCheckpointConfig:
    mode: Literal["selective", "full", "none"] = "selective"
    """full: recompute whole blocks; selective: see selective_ac_option; none: off (then
    remove ac from the plugins)."""
    selective_ac_option: str = "op"
    """'op': keep every second matmul and attention outputs, recompute the rest (torchtitan's
    policy); '<n>' (e.g. '2'):
    fully checkpoint every n-th block."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"ac": ActivationCheckpointConfig}


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    return [
        ConfigAlias("activation_checkpoint.mode", target="ac.mode", activates="ac"),
        ConfigAlias("activation_checkpoint.selective_ac_option", target="ac.selective_ac_option"),
    ]


def layer_frequency(option: str) -> int | None:
    """``"2"`` -> 2; ``"op"`` -> None. Raises ConfigError for anything else."""
    from titan.core.errors import ConfigError

    option = option.strip()
    if option == "op":
        return None
    if option.isdigit() and int(option) > 0:
        return int(option)
    raise ConfigError(
        f"ac.selective_ac_option must be 'op' or a positive whole number of blocks, got "
        f"{option!r}; e.g. --ac.selective_ac_option=op or --ac.selective_ac_option=2"
    )


@hookimpl
def titan_validate_config(config: Any, active: frozenset[str]) -> None:
    from titan.core.errors import ConfigError

    c = config.ac
    if c.mode == "none":
        raise ConfigError(
            "plugin 'ac' is active but ac.mode is 'none'; set ac.mode to 'full' or "
            "'selective', or remove ac from the plugins"
        )
    if c.mode == "selective":
        layer_frequency(c.selective_ac_option)


# --- what "selective per operator" keeps ------------------------------------


def ops_to_save() -> set[Any]:
    """The ops whose outputs per-operator checkpointing may keep: torchtitan v0.2.2's list.

    ``_op_sac_save_list`` of torchtitan's ``models/llama3/infra/parallelize.py``:
    ``aten.mm`` (every second one only, see :func:`op_policy`), the attention
    kernels of CUDA (flash, efficient, cuDNN, math, fused), the sequence-parallel
    reduce-scatter, ``aten.max`` (float8 scales come from max(abs(x));
    recomputing them could round differently), flex and variable-length
    attention, and regions compiled by inductor. Not in it, as in torchtitan:
    ``aten._scaled_mm`` (float8 matmuls are recomputed), ``addmm``/``bmm``, and
    the CPU flash-attention kernel. Entries this torch lacks are left out.
    """
    import torch

    aten = torch.ops.aten
    found: set[Any] = set()

    def add(namespace: Any, name: str, overload: str | None = "default") -> None:
        op = getattr(namespace, name, None)
        if op is not None and overload is not None:
            op = getattr(op, overload, None)
        if op is not None:
            found.add(op)

    add(aten, "mm")
    for name in (
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_fused_attention_overrideable",
        "max",
    ):
        add(aten, name)
    add(getattr(torch.ops, "_c10d_functional", None), "reduce_scatter_tensor")
    add(getattr(torch.ops, "torch_attn", None), "_varlen_attn")
    hops = getattr(torch, "_higher_order_ops", None)
    add(hops, "flex_attention", None)
    add(hops, "inductor_compiled_code", None)
    return found


def op_policy() -> Any:
    """torchtitan's per-op policy, with fresh counters (one per checkpointed forward).

    Keeps the outputs of the ops in :func:`ops_to_save`, except every second
    ``aten.mm`` (counted separately in forward and in recomputation, as
    torchtitan does; torch 2.15 asks in forward only and replays the choices);
    recomputes everything else. A copy from an
    accelerator to the CPU is always kept (torchtitan: recomputing it would
    wait for the device).
    """
    import torch
    from torch.utils.checkpoint import CheckpointPolicy

    save = ops_to_save()
    mm = torch.ops.aten.mm.default
    to_copy = torch.ops.aten._to_copy.default
    counts = {"forward": 0, "recompute": 0}

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if (
            func == to_copy
            and "cuda" in str(args[0].device)
            and str(kwargs.get("device", "")) == "cpu"
        ):
            return CheckpointPolicy.MUST_SAVE
        mode = "recompute" if ctx.is_recompute else "forward"
        if func == mm:
            counts[mode] += 1
        keep = func in save and not (func == mm and counts[mode] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _op_selective_context() -> Any:
    """A ``context_fn`` for torch's checkpoint: called per block forward, fresh counters each."""
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(op_policy())


def wrap_block(block: Any, per_op: bool) -> Any:
    """``block`` inside torch's non-reentrant checkpoint wrapper (full, or selective per op)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    if per_op:
        return checkpoint_wrapper(block, context_fn=_op_selective_context, preserve_rng_state=False)
    return checkpoint_wrapper(block, preserve_rng_state=False)


def blocks_to_wrap(n_blocks: int, config: ActivationCheckpointConfig) -> list[int]:
    """Indices of the blocks that get a checkpoint (every n-th: the n-th, 2n-th, ...)."""
    if config.mode == "full":
        return list(range(n_blocks))
    every = layer_frequency(config.selective_ac_option)
    if every is None:
        return list(range(n_blocks))
    return [i for i in range(n_blocks) if (i + 1) % every == 0]


# --- memory report ------------------------------------------------------------


def _activation_mib(first: Any, second: Any, x: Any, freqs: Any) -> float:
    """MiB one more block in the chain holds for backward until its backward runs.

    Measured on two copies of the block in a row, as what is alive after the
    second minus after the first, so a block's input (held by the previous block) and its output
    (held by the next) are counted exactly once, as in the real model. Not the
    peak over forward and backward: a checkpointed block rematerialises its
    activations in its own backward; the saving is what each block does *not*
    hold while all the others run.
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    def act(snapshot: dict) -> float:
        return sum(v for d in snapshot.values() for k, v in d.items() if "ACT" in str(k))

    tracker = MemTracker()
    tracker.track_external(first, second)
    with tracker:
        h = first(x, freqs)
        one = act(tracker.get_tracker_snapshot("current"))
        h = second(h, freqs)
        two = act(tracker.get_tracker_snapshot("current"))
        del h
    return (two - one) / 2**20


def measure_block_memory(
    block: Any, model: Any, config: Any, device: Any, per_op: bool
) -> tuple[float, float]:
    """(MiB without, MiB with) checkpointing, per block, for this run's shapes and device.

    Runs copies of the block on fake tensors of ``device`` (torch's
    FakeTensorMode: real kernels are chosen, as on the device, but nothing is
    allocated or computed). The device matters: CPU attention keeps a
    log-sum-exp where the generic (meta) path would keep the whole attention
    matrix. Returns (0, 0) when the block cannot be probed alone (its weights
    are already sharded by tensor parallel, or it is not a Llama-style block).
    """
    import contextlib
    import copy

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed.tensor import DTensor

    args = getattr(model, "args", None)
    if args is None:
        return 0.0, 0.0
    if any(isinstance(p, DTensor) for p in block.parameters()):
        say_once("ac: memory saving not measured (a tensor-parallel block cannot run alone)")
        return 0.0, 0.0
    t = config.training
    copies = [copy.deepcopy(block) for _ in range(4)]
    bf16 = t.mixed_precision_param == "bfloat16"
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), autocast:
            fakes = [c.to_empty(device=device) for c in copies]
            x = torch.empty(t.local_batch_size, t.seq_len, args.dim, device=device)
            x.requires_grad_(True)
            freqs = torch.empty(t.seq_len, args.head_dim // 2, dtype=torch.complex64, device=device)
            without = _activation_mib(fakes[0], fakes[1], x, freqs)
            wrapped = [wrap_block(f, per_op) for f in fakes[2:]]
            with_ac = _activation_mib(wrapped[0], wrapped[1], x, freqs)
    except Exception as exc:  # a report must never stop a run
        say_once(f"ac: could not measure the memory saved ({type(exc).__name__}: {exc})")
        return 0.0, 0.0
    return without, with_ac


def _describe(c: ActivationCheckpointConfig) -> str:
    if c.mode == "full":
        return "full"
    every = layer_frequency(c.selective_ac_option)
    return (
        "selective per op (keeps every second matmul, attention)"
        if every is None
        else f"every {every}"
    )


@hookimpl
def titan_apply_activation_checkpointing(model: Any, config: Any, parallel: Any) -> None:
    """Wrap the chosen blocks in ``checkpoint_wrapper`` and report the memory saved."""
    c = config.ac
    layers = transformer_blocks(model)
    names = [name for name, _ in layers.named_children()]
    chosen = blocks_to_wrap(len(names), c)
    per_op = c.mode == "selective" and layer_frequency(c.selective_ac_option) is None
    if not chosen:
        return
    without, with_ac = measure_block_memory(
        layers.get_submodule(names[chosen[0]]), model, config, parallel.device, per_op
    )
    for i in chosen:
        layers.register_module(names[i], wrap_block(layers.get_submodule(names[i]), per_op))
    what = f"ac: {_describe(c)}: {len(chosen)} of {len(names)} blocks checkpointed"
    if without > 0:
        saved = (without - with_ac) * len(chosen)
        total = without * len(names)
        # Kept on the model, so each build (several in one test process) reports its own.
        model._titan_ac_report = {
            "ac_saved_mib": round(saved, 3),
            "ac_block_act_mib": round(total, 3),
            "ac_block_act_with_ac_mib": round(total - saved, 3),
        }
        what += (
            f"; block activations per step {total:.1f} -> {total - saved:.1f} MiB "
            f"(saves {saved:.1f} MiB, {100 * saved / total:.0f}%)"
        )
    say_once(what)


@hookimpl
def titan_step_end(trainer: Any, step: int, metrics: dict[str, Any]) -> None:
    """Log the measured saving once, with the first step of the run."""
    report = getattr(trainer.model, "_titan_ac_report", None)
    if report:
        metrics.update(report)
        trainer.model._titan_ac_report = None
