"""ac's per-operator policy keeps exactly what torchtitan v0.2.2's keeps, on a real block.

The reference below is torchtitan v0.2.2's policy transcribed
(``_op_sac_save_list`` in ``torchtitan/models/llama3/infra/parallelize.py``,
``_custom_policy`` in ``torchtitan/distributed/activation_checkpoint.py``;
torchtitan is not a dependency of titan). Both policies see every op of one
debug-sized Llama block's forward and must decide alike for each (torch 2.15
asks the policy in forward only; recomputation replays those decisions).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.models.llama.args import LLAMA3_FLAVORS  # noqa: E402
from titan.models.llama.model import TransformerBlock, precompute_freqs_cis  # noqa: E402
from titan.optims.activation_checkpointing import (  # noqa: E402
    op_policy,
    ops_to_save,
    wrap_block,
)

SAVE, RECOMPUTE = CheckpointPolicy.MUST_SAVE, CheckpointPolicy.PREFER_RECOMPUTE


def torchtitan_save_list() -> set[Any]:
    """torchtitan v0.2.2's ``_op_sac_save_list`` (entries this torch lacks left out)."""
    ops = torch.ops
    names = [
        (ops.aten, "mm"),
        (ops.aten, "_scaled_dot_product_efficient_attention"),
        (ops.aten, "_scaled_dot_product_flash_attention"),
        (ops.aten, "_scaled_dot_product_cudnn_attention"),
        (ops.aten, "_scaled_dot_product_attention_math"),
        (ops.aten, "_scaled_dot_product_fused_attention_overrideable"),
        (ops._c10d_functional, "reduce_scatter_tensor"),
        (ops.aten, "max"),
    ]
    found = {getattr(ns, n).default for ns, n in names if hasattr(ns, n)}
    for hop in ("flex_attention", "inductor_compiled_code"):
        if hasattr(torch._higher_order_ops, hop):
            found.add(getattr(torch._higher_order_ops, hop))
    if hasattr(ops, "torch_attn") and hasattr(ops.torch_attn, "_varlen_attn"):
        found.add(ops.torch_attn._varlen_attn.default)
    return found


def torchtitan_policy(meta: dict[str, int], save_list: set[Any]) -> Any:
    """torchtitan v0.2.2's ``_custom_policy`` (no mm shapes forced to recompute: a MoE option)."""

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if (
            func == torch.ops.aten._to_copy.default
            and "cuda" in str(args[0].device)
            and "device" in kwargs
            and str(kwargs["device"]) == "cpu"
        ):
            return SAVE
        mode = "recompute" if ctx.is_recompute else "forward"
        mm_count_key = f"{mode}_mm_count"
        if func == torch.ops.aten.mm.default:
            meta[mm_count_key] += 1
        to_save = func in save_list and not (
            func == torch.ops.aten.mm.default and meta[mm_count_key] % 2 == 0
        )
        return SAVE if to_save else RECOMPUTE

    return policy


def debug_block() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Block 0 of the debug Llama 3 (GQA: 16 query heads, 8 kv heads), a batch, rotary table."""
    args = LLAMA3_FLAVORS["debug"]
    torch.manual_seed(0)
    block = TransformerBlock(0, args)
    block.init_weights()
    x = torch.randn(2, 64, args.dim, requires_grad=True)
    freqs = precompute_freqs_cis(args.head_dim, 64, args.rope_theta)
    return block, x, freqs


def run_recording(block: torch.nn.Module, x: torch.Tensor, freqs: torch.Tensor) -> list[tuple]:
    """Forward + backward of ``block`` under titan's policy; every decision with torchtitan's."""
    decisions: list[tuple] = []
    reference_list = torchtitan_save_list()

    def context_fn() -> Any:
        ours = op_policy()
        theirs = torchtitan_policy(defaultdict(int), reference_list)

        def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
            mine = ours(ctx, func, *args, **kwargs)
            ref = theirs(ctx, func, *args, **kwargs)
            decisions.append((ctx.is_recompute, str(func), mine, ref))
            return mine

        return create_selective_checkpoint_contexts(policy)

    wrapped = checkpoint_wrapper(block, context_fn=context_fn, preserve_rng_state=False)
    wrapped(x, freqs).sum().backward()
    return decisions


def test_save_list_is_torchtitans() -> None:
    assert ops_to_save() == torchtitan_save_list()
    assert torch.ops.aten._scaled_mm.default not in ops_to_save()


def test_block_decisions_match_torchtitan_op_by_op() -> None:
    block, x, freqs = debug_block()
    decisions = run_recording(block, x, freqs)
    forward = [d for d in decisions if not d[0]]
    assert forward
    for is_recompute, op, mine, ref in decisions:
        assert mine == ref, (is_recompute, op, mine, ref)
    mms = [mine for _, op, mine, _ in forward if op == "aten.mm.default"]
    # wq, wk, wv, wo, w1, w3, w2: the 1st, 3rd, 5th and 7th are kept (4 of 7)
    assert mms == [SAVE, RECOMPUTE, SAVE, RECOMPUTE, SAVE, RECOMPUTE, SAVE]
    # Only matmuls are kept in a bf16/fp32 block on CPU (the CPU attention kernel is
    # not in torchtitan's list).
    assert {op for _, op, mine, _ in forward if mine == SAVE} == {"aten.mm.default"}


def test_titans_wrapper_recomputes_what_the_policy_says() -> None:
    """``wrap_block`` (what the plugin installs) redoes exactly the mms the policy gives up."""
    block, x, freqs = debug_block()
    wrapped = wrap_block(block, per_op=True)
    out = wrapped(x, freqs).sum()
    counter = h.OpCount()
    with counter:
        out.backward()
    plain_block, x2, _ = debug_block()
    plain_out = plain_block(x2, freqs).sum()
    plain = h.OpCount()
    with plain:
        plain_out.backward()
    assert counter.counts["aten.mm"] == plain.counts["aten.mm"] + 3  # wk, wo, w3
    for a, b in zip(block.parameters(), plain_block.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


class Ctx:
    def __init__(self, is_recompute: bool) -> None:
        self.is_recompute = is_recompute


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("_scaled_mm", RECOMPUTE),  # float8 matmuls: not kept (torchtitan)
        ("addmm", RECOMPUTE),
        ("max", SAVE),  # float8 amax
        ("_scaled_dot_product_flash_attention", SAVE),
        ("_scaled_dot_product_efficient_attention", SAVE),
        ("_scaled_dot_product_cudnn_attention", SAVE),
        ("silu", RECOMPUTE),
    ],
)
def test_single_decisions(op: str, expected: CheckpointPolicy) -> None:
    policy = op_policy()
    assert policy(Ctx(False), getattr(torch.ops.aten, op).default) == expected
    assert policy(Ctx(True), getattr(torch.ops.aten, op).default) == expected
