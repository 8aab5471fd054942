"""The LR of every step equals torchtitan's (v0.2.2 lr_scheduler.py, and the 2024 files')."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from titan.core.config.sections import LRSchedulerSection
from titan.core.lr_schedule import build_lr_scheduler, lr_factor


def torchtitan_v022(step: int, warmup: int, total: int, ratio, kind: str, floor: float) -> float:
    """torchtitan v0.2.2's ``build_lr_schedulers`` + ``linear_warmup_stable_decay``, re-read.

    Kept literal on purpose (its variable names, its order of operations) so that
    the comparison is against torchtitan's formula, not against titan's rewrite.
    """
    warmup_steps = min(warmup, total)
    if ratio is not None:
        decay_steps = round(total * ratio)
        if warmup_steps + decay_steps > total:
            decay_steps = total - warmup_steps
    else:
        decay_steps = total - warmup_steps
    stable_steps = total + 1 - warmup_steps - decay_steps
    warmup_stable_steps = warmup_steps + stable_steps
    current_step = step
    if current_step < warmup_steps:
        current_step += 1
        return float(current_step / warmup_steps)
    if current_step < warmup_stable_steps:
        return 1.0
    current_step += 1
    progress = float(current_step - warmup_stable_steps) / decay_steps
    if kind == "linear":
        adj = 1 - progress
    elif kind == "sqrt":
        adj = 1 - math.sqrt(progress)
    else:
        adj = 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1 - floor) * adj


def torchtitan_2024(step: int, warmup: int, total: int) -> float:
    """torchtitan's 2024 ``linear_warmup_linear_decay``."""
    decay_steps = float(max(1, total - warmup))
    if step < warmup:
        return float((step + 1) / (warmup + 1))
    normalized_step = decay_steps - (step - warmup)
    return 1 - (decay_steps - normalized_step) / decay_steps


def lrs_used(section: LRSchedulerSection, steps: int, lr: float = 8e-4) -> list[float]:
    """The LR each optimizer step of a real AdamW actually ran with, and what metrics log."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = build_lr_scheduler(optimizer, section, steps)
    used = []
    for _ in range(steps):
        param.grad = torch.ones(2)
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        assert scheduler.lr_of_last_step() == pytest.approx(used[-1])  # the logged LR
    return used


def test_v022_debug_schedule_every_step() -> None:
    """warmup 2, decay_ratio 0.8, linear, min_lr_factor 0.0, 10 steps (v0.2.2's debug file)."""
    section = LRSchedulerSection(
        warmup_steps=2, decay_ratio=0.8, decay_type="linear", min_lr_factor=0.0
    )
    used = lrs_used(section, 10)
    reference = [8e-4 * torchtitan_v022(i, 2, 10, 0.8, "linear", 0.0) for i in range(10)]
    assert used == pytest.approx(reference, rel=1e-12)
    # The same, worked out by hand: 2 warmup steps, 1 stable (+ the virtual last), 8 decaying.
    by_hand = [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert used == pytest.approx([8e-4 * f for f in by_hand], rel=1e-12)


@pytest.mark.parametrize("kind", ["linear", "sqrt", "cosine"])
@pytest.mark.parametrize(
    ("warmup", "total", "ratio", "floor"),
    [
        (0, 7, None, 0.0),
        (3, 20, None, 0.1),
        (5, 50, 0.3, 0.0),
        (200, 3000, 0.8, 0.05),
        (9, 4, 1.0, 0),
    ],
)
def test_every_decay_shape_matches(kind: str, warmup: int, total: int, ratio, floor) -> None:
    for i in range(total):
        ours = lr_factor(i, warmup, total, kind, floor, ratio)
        assert ours == pytest.approx(torchtitan_v022(i, warmup, total, ratio, kind, floor))


def test_2024_files_get_the_2024_schedule() -> None:
    section = LRSchedulerSection(warmup_steps=2, formula="torchtitan_2024")
    used = lrs_used(section, 10)
    assert used == pytest.approx([8e-4 * torchtitan_2024(i, 2, 10) for i in range(10)])
    assert used[0] == pytest.approx(8e-4 / 3)  # (i+1)/(w+1)


def test_total_steps_keeps_a_longer_runs_schedule() -> None:
    section = LRSchedulerSection(warmup_steps=2, decay_ratio=0.8, total_steps=10)
    used = lrs_used(section, 4)
    full = lrs_used(replace(section, total_steps=None), 10)
    assert used == pytest.approx(full[:4])


def test_decay_type_none_holds_the_peak() -> None:
    assert lrs_used(LRSchedulerSection(warmup_steps=2, decay_type="none"), 5)[2:] == [8e-4] * 3
