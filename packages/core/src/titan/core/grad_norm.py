"""Gradient clipping with one total norm: computed once, reduced once, used to clip.

``torch.nn.utils.clip_grad_norm_`` on DTensor gradients returns a partial
DTensor norm: clipping with it reduces it across ranks once, and turning the
returned norm into a plain tensor for logging (``full_tensor()``) reduces it
again. Here, as in torchtitan's ``dist_utils.clip_grad_norm_``, the norm is
made a plain (replicated) tensor first and the gradients are clipped with
that: one all-reduce per step, and the norm stays on the device, so reading
it (``.item()``) can wait for a logging step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def clip_grad_norm_(
    parameters: Iterable[torch.Tensor], max_norm: float, foreach: bool | None = True
) -> torch.Tensor:
    """Total 2-norm of the gradients (a plain device tensor); clip to ``max_norm`` if it is > 0.

    Same arithmetic as ``torch.nn.utils.clip_grad_norm_``: the same per-shard
    norms, the same reduction, the same clip coefficient; only the number of
    times the norm is all-reduced differs.
    """
    params = list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0, False, foreach)
    full_tensor = getattr(total, "full_tensor", None)
    if full_tensor is not None:  # a DTensor with a partial norm: reduce it here, once
        total = full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach)
    return total
