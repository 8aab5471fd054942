"""Measuring steps: wall time, throughput, and reducing values across ranks."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist


def reduce_mean(value: torch.Tensor, parallel: Any) -> float:
    """Mean of ``value`` over data-parallel ranks (the global loss), as a Python float."""
    if parallel.mesh is None or parallel.dp_degree == 1:
        return float(value)
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM, group=parallel.dp_mesh.get_group())
    return float(value) / parallel.dp_degree


class StepTimer:
    """Step time and tokens/s (per rank) over the steps since the last read."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._tokens = 0
        self._time = 0.0
        self._steps = 0
        self._last_step_time = 0.0

    def start_step(self) -> None:
        self._t0 = time.perf_counter()

    def end_step(self, tokens: int) -> None:
        self._last_step_time = time.perf_counter() - self._t0
        self._time += self._last_step_time
        self._tokens += tokens
        self._steps += 1

    def read(self) -> dict[str, Any]:
        out = {
            "tokens_per_second": self._tokens / self._time if self._time else 0.0,
            "step_time": self._time / self._steps if self._steps else 0.0,
        }
        if torch.cuda.is_available():
            out["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self._tokens, self._time, self._steps = 0, 0.0, 0
        return out
