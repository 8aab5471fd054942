"""Learning-rate schedule: torchtitan's warmup, stable phase and decay, step for step.

A torchtitan user's TOML must train with the LR torchtitan would use, so the
formulas are torchtitan's own (written afresh here):

* ``formula = "torchtitan"`` (releases v0.1.0 to v0.2.2, titan's default):
  warmup ``(i+1)/w``; then the peak LR for the stable steps; then the decay
  (linear, sqrt or cosine) over ``round(decay_ratio * total)`` steps, from 1
  to ``min_lr_factor``. A virtual last step keeps the final LR above the floor.
* ``formula = "torchtitan_2024"`` (the 2024 ``train_configs/`` files): warmup
  ``(i+1)/(w+1)``, then linear decay towards 0 over ``total - w`` steps.
  titan detects such files and picks this formula (docs/torchtitan.md).

``i`` is the 0-based index of the optimizer step; torch's ``LambdaLR`` applies
``factor(i)`` to step ``i + 1``.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def lr_factor(
    step_index: int,
    warmup: int,
    total: int,
    decay_type: str = "linear",
    min_lr_factor: float = 0.0,
    decay_ratio: float | None = None,
    formula: str = "torchtitan",
) -> float:
    """Multiplier of the base LR for the ``step_index``-th optimizer step (0-based)."""
    if formula == "torchtitan_2024":
        return _factor_2024(step_index, warmup, total)
    warmup = min(warmup, total)
    if decay_ratio is not None:
        decay = min(round(total * decay_ratio), total - warmup)
    else:
        decay = total - warmup
    stable = total + 1 - warmup - decay  # + the virtual last step
    if step_index < warmup:
        return (step_index + 1) / warmup
    if step_index < warmup + stable or decay_type == "none" or decay <= 0:
        return 1.0
    # Past lr_scheduler.total_steps (a shortened run's schedule) the floor holds.
    progress = min(1.0, (step_index + 1 - warmup - stable) / decay)
    if decay_type == "linear":
        shape = 1 - progress
    elif decay_type == "sqrt":
        shape = 1 - math.sqrt(progress)
    elif decay_type == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown decay_type {decay_type!r}")
    return min_lr_factor + (1 - min_lr_factor) * shape


def _factor_2024(step_index: int, warmup: int, total: int) -> float:
    """torchtitan's 2024 ``linear_warmup_linear_decay``."""
    if step_index < warmup:
        return (step_index + 1) / (warmup + 1)
    decay = max(1, total - warmup)
    return 1 - (step_index - warmup) / decay


class WarmupStableDecay(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` with :func:`lr_factor`, plus the LR the last optimizer step used.

    ``get_last_lr()`` is the LR of the *next* step once ``step()`` ran;
    metrics report :meth:`lr_of_last_step` instead. The state dict is
    LambdaLR's (a plain function as lambda), so checkpoints keep their layout.
    """

    def lr_of_last_step(self) -> float:
        """The LR the optimizer step before the last ``step()`` call used."""
        return self.base_lrs[0] * self.lr_lambdas[0](max(0, self.last_epoch - 1))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, section: Any, training_steps: int
) -> WarmupStableDecay:
    """The scheduler of the ``[lr_scheduler]`` config ``section`` for ``training_steps`` steps."""
    total = section.total_steps if section.total_steps is not None else training_steps
    warmup, decay_type = section.warmup_steps, section.decay_type
    min_lr, ratio, formula = section.min_lr_factor, section.decay_ratio, section.formula

    def factor(i: int) -> float:
        return lr_factor(i, warmup, total, decay_type, min_lr, ratio, formula)

    return WarmupStableDecay(optimizer, factor)
