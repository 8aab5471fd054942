"""The computation behind the ``chunked-loss`` plugin: output projection + cross-entropy per chunk.

Kept apart from the plugin module because it imports torch at import time
(``titan plugins list`` imports the plugin modules and must not import torch).
See ``titan.optims.chunked_loss`` for why the gradients are made in the forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Partial

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default


class HiddenStatesHead(nn.Linear):
    """The output layer with its projection moved into the loss: returns its input.

    Same parameters and state-dict key (``output.weight``) as the ``nn.Linear``
    it replaces, so checkpoints load either way and FSDP groups it as before.
    """

    returns_hidden_states = True  # read by tp: keep the input replicated, make no logits

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


MIN_CHUNK_TOKENS = 256


def default_chunk_tokens(tokens: int, vocab: int, dim: int) -> int:
    """About ``vocab / dim`` chunks, each at least 256 tokens (all of them if fewer).

    ``vocab / dim`` chunks make each chunk's logits about as large as the hidden
    states (Liger's rule): for Llama 3 8B (dim 4096) that is 256 tokens of an 8K
    sequence. For narrow models the rule alone gives chunks of a few tokens, whose
    matrix products run far below the device's speed; 256 tokens keep them efficient
    while one chunk's float32 logits stay at 128 MB for a 128K vocabulary.
    """
    by_shape = math.ceil(tokens / max(1, math.ceil(vocab / dim)))
    return min(tokens, max(MIN_CHUNK_TOKENS, by_shape))


class ChunkedCrossEntropy:
    """``loss(hidden, labels)``: mean cross-entropy of ``hidden @ head.weight.T``, chunked."""

    def __init__(self, head: nn.Module, chunk_tokens: int = 0) -> None:
        self.head = head
        self.chunk_tokens = chunk_tokens

    def _gathered_weight(self) -> torch.Tensor:
        """The output weight as this rank computes with it: whole, or a TP vocabulary slice."""
        weight = self.head.weight
        if isinstance(weight, DTensor) and weight.device_mesh.mesh_dim_names != ("tp",):
            # FSDP resharded the head after its forward: gather it again for the loss
            # (FSDP's own backward hook then finds it gathered and frees it after).
            self.head.unshard()
            weight = self.head.weight
        return weight

    def __call__(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self._gathered_weight()
        group, vocab_start = None, 0
        if isinstance(weight, DTensor):  # tensor parallel: this rank's rows of the vocabulary
            mesh = weight.device_mesh
            group = mesh.get_group()
            local = weight.to_local()
            vocab_start = mesh.get_local_rank() * local.shape[0]
            weight = local
        if isinstance(hidden, DTensor):
            # Replicated over TP; each rank's gradient covers its vocabulary slice only.
            hidden = hidden.to_local(grad_placements=[Partial()])
        hidden = hidden.flatten(0, -2)
        labels = labels.flatten()
        grad = torch.is_grad_enabled()
        chunk = self.chunk_tokens or default_chunk_tokens(
            hidden.shape[0], weight.shape[0], hidden.shape[1]
        )
        return LinearCrossEntropy.apply(
            hidden,
            weight,
            labels,
            chunk,
            group,
            vocab_start,
            grad and hidden.requires_grad,
            grad and weight.requires_grad,
        )


class LinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of ``hidden @ weight.T`` with the gradients made chunk by chunk.

    ``weight`` may be one TP rank's vocabulary rows (``vocab_start`` its first
    token id, ``group`` the TP group): the softmax's max and sum and the
    target logit are then all-reduced per chunk.
    """

    @staticmethod
    def forward(  # noqa: PLR0913
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        chunk: int,
        group: Any,
        vocab_start: int,
        grad_hidden_needed: bool,
        grad_weight_needed: bool,
    ) -> torch.Tensor:
        dtype = hidden.dtype  # the compute dtype: what the plain nn.Linear would multiply in
        w = weight.to(dtype)
        vocab = w.shape[0]
        valid = labels != IGNORE_INDEX
        count = valid.sum().clamp(min=1).float()
        grad_hidden = torch.empty_like(hidden) if grad_hidden_needed else None
        # Accumulated in the weight's own dtype: under FSDP's bf16 gather that is the
        # compute dtype; for float32 weights (one device, autocast) it is float32, made
        # from the float32 softmax directly, with no bf16 sum and no float32 copy of it.
        grad_weight = torch.zeros_like(weight) if grad_weight_needed else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            ok = valid[start : start + chunk]
            y = labels[start : start + chunk] - vocab_start
            mine = ok & (y >= 0) & (y < vocab)  # the target token is in this rank's rows
            index = torch.where(mine, y, 0).unsqueeze(1)
            logits = (h @ w.T).float()
            target = torch.where(mine, logits.gather(1, index).squeeze(1), 0.0)
            lse = torch.logsumexp(logits, 1)  # one fused pass (of this rank's slice under TP)
            if group is not None:
                peak = lse.clone()
                dist.all_reduce(peak, dist.ReduceOp.MAX, group=group)
                sums = (lse - peak).exp_()
                dist.all_reduce(sums, group=group)
                lse = peak + sums.log_()
                dist.all_reduce(target, group=group)
            total = total + torch.where(ok, lse - target, 0.0).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d loss / d logits = (softmax - onehot) * ok / count. The scale goes into the
            # exponent (exp(x - lse + log scale)), so the scaled softmax takes two in-place
            # passes over the chunk's logits; an ignored token's shift is +inf, its row 0.
            scale = ok.float() / count
            probs = logits.sub_((lse - scale.log()).unsqueeze(1)).exp_()
            probs.scatter_add_(1, index, -(scale * mine).unsqueeze(1))
            g = probs.to(dtype)
            if grad_hidden is not None:
                torch.mm(g, w, out=grad_hidden[start : start + chunk])
            if grad_weight is not None:
                same = g if grad_weight.dtype == dtype else probs.to(grad_weight.dtype)
                grad_weight.addmm_(same.T, h.to(grad_weight.dtype))
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:
        # Scaled in place: a scaled copy would hold the output weight's gradient twice
        # (2 GB more for Llama 3 8B) at the very start of backward, when every block's
        # activations are still alive. So this backward runs once (no retain_graph).
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden.mul_(grad_loss.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight.mul_(grad_loss.to(grad_weight.dtype))
        return grad_hidden, grad_weight, None, None, None, None, None, None
