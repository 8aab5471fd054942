"""Measuring steps: wall time, throughput, and reducing values across ranks."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist


def all_reduce_sum(value: torch.Tensor, parallel: Any) -> torch.Tensor:
    """Sum of ``value`` over data-parallel ranks, as a device tensor (no host sync).

    One all-reduce, whatever the shape: callers stack everything a logging
    step needs into one tensor and reduce it at once.
    """
    value = value.detach()
    if parallel.mesh is None or parallel.dp_degree == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM, group=parallel.dp_mesh.get_group())
    return value


def reduce_mean(value: torch.Tensor, parallel: Any) -> float:
    """Mean of a scalar over data-parallel ranks (the global loss), as a Python float.

    Waits for the device (``float``): call it on logging steps only. The
    division is done in Python (float64), after the sum.
    """
    return float(all_reduce_sum(value, parallel)) / parallel.dp_degree


class StepTimer:
    """Step time and tokens/s (per rank) over the steps since the last read, without syncs.

    On an accelerator the host only queues a step's kernels, so the time
    between ``start_step`` and ``end_step`` of one step is not that step's
    time, and waiting for the device every step would cost throughput.
    Instead the times of all steps of a logging interval are summed, and the
    trainer ends the interval's last step after the logging step's host sync
    (reading the loss): the sum then covers the device work of the whole
    interval. Work between steps (checkpoints, validation, logging) is left
    out, as it was when every step synchronised.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._tokens = 0
        self._time = 0.0
        self._steps = 0

    def start_step(self) -> None:
        self._t0 = time.perf_counter()

    def end_step(self, tokens: int) -> None:
        """End a step; on a logging step, call it after the values were read from the device."""
        self._time += time.perf_counter() - self._t0
        self._tokens += tokens
        self._steps += 1

    def read(self) -> dict[str, Any]:
        out = {
            "tokens_per_second": self._tokens / self._time if self._time else 0.0,
            "step_time": self._time / self._steps if self._steps else 0.0,
        }
        self._tokens, self._time, self._steps = 0, 0.0, 0
        return out
