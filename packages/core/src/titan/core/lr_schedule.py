"""Learning-rate schedule: linear warmup, then linear or cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def lr_factor(step_index: int, warmup: int, total: int, decay_type: str, lr_min: float) -> float:
    """Multiplier of the base LR for the ``step_index``-th optimizer step (0-based)."""
    if step_index < warmup:
        return (step_index + 1) / (warmup + 1)
    if decay_type == "none" or total <= warmup:
        return 1.0
    progress = min(1.0, (step_index - warmup) / max(1, total - warmup))
    if decay_type == "cosine":
        return lr_min + (1 - lr_min) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - progress * (1.0 - lr_min)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, decay_type: str, lr_min: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, warmup, total, decay_type, lr_min)
    )
