"""The log-step metrics users read: throughput per device, TFLOP/s, MFU, memory, time.

The trainer measures step time and hands it here at each log step; this
module turns it into figures that mean the same thing on any layout:

* ``tokens_per_second`` is **per device**. Tensor-parallel peers work on the
  same tokens, so a rank's tokens are divided by the TP degree; data-parallel
  ranks (FSDP, HSDP) each read their own. ``tokens_per_second_total`` is the
  whole job's.
* ``tflops`` (per device) and ``mfu`` (% of the device's peak, see
  :mod:`titan.core.device_peaks`) from :mod:`titan.core.flops`. No ``mfu``
  when the peak is unknown, rather than a wrong one.
* ``data_time``: the part of ``step_time`` spent waiting for the data loader.
* ``elapsed``: seconds since training started (for ETAs and plots).
* memory, from :mod:`titan.core.memory`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from titan.core.device_peaks import Peak, reprobe_fastest_cpu_peak, resolve_peak
from titan.core.flops import model_flops_per_token
from titan.core.memory import MemoryMonitor


def uses_float8(model: Any) -> bool:
    """Whether a plugin converted linears to float8 (then MFU is against the float8 peak)."""
    return any("Float8" in type(m).__name__ for m in model.modules())


class LogStepMetrics:
    """Collects per-step data wait and assembles the metrics of each log step."""

    def __init__(
        self,
        *,
        tokens_per_step: int,
        tp_degree: int,
        dp_degree: int,
        flops_per_token: int,
        peak: Peak | None,
        memory: MemoryMonitor,
        dtype: str = "bfloat16",
        tell: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.tokens_per_step = tokens_per_step  # per data-parallel rank, all micro-batches
        self.tp_degree = tp_degree
        self.dp_degree = dp_degree
        self.flops_per_token = flops_per_token
        self.peak = peak
        self.memory = memory
        self.dtype = dtype  # of the CPU probe, should it need measuring again
        self.tell = tell
        self._reprobed = False
        self.start = time.perf_counter()
        self._data_time = 0.0
        self._data_steps = 0

    @classmethod
    def for_trainer(cls, trainer: Any) -> LogStepMetrics:
        """Built at train start. Only rank 0 logs, so only rank 0 looks up (or probes) the peak."""
        c, p = trainer.config, trainer.parallel
        peak = None
        if p.is_main:
            peak = resolve_peak(
                p.device.type,
                uses_float8(trainer.model),
                c.metrics.peak_tflops,
                c.training.mixed_precision_param,
            )
            trainer._tell(peak.describe())
        return cls(
            tokens_per_step=c.training.local_batch_size
            * c.training.seq_len
            * trainer.grad_accum_steps,
            tp_degree=p.tp,
            dp_degree=p.dp_degree,
            flops_per_token=model_flops_per_token(
                trainer.model, trainer.model_args, c.training.seq_len
            ),
            peak=peak,
            memory=MemoryMonitor(p.device),
            dtype=c.training.mixed_precision_param,
            tell=trainer._tell,
        )

    def add_data_time(self, seconds: float) -> None:
        """Time one step waited for its batches (already part of the step time)."""
        self._data_time += seconds
        self._data_steps += 1

    def collect(self, step_time: float) -> dict[str, float]:
        """Metrics of the steps since the last call, given their mean ``step_time``."""
        per_device = self.tokens_per_step / self.tp_degree / step_time if step_time else 0.0
        out: dict[str, float] = {
            "tokens_per_second": per_device,
            "tokens_per_second_total": per_device * self.tp_degree * self.dp_degree,
            "data_time": self._data_time / self._data_steps if self._data_steps else 0.0,
            "tflops": per_device * self.flops_per_token / 1e12,
            "elapsed": time.perf_counter() - self.start,
        }
        if self.peak is not None and self.peak.tflops:
            out["mfu"] = 100 * out["tflops"] / self.peak.tflops
            if out["mfu"] > 100 and self.peak.source == "probe" and not self._reprobed:
                out["mfu"] = 100 * out["tflops"] / self._measure_peak_again()
        out.update(self.memory.read_and_reset())
        self._data_time, self._data_steps = 0.0, 0
        return out

    def _measure_peak_again(self) -> float:
        """A step beat the cached CPU peak, so that probe ran on a busy CPU: measure once more."""
        assert self.peak is not None and self.peak.tflops
        old = self.peak.tflops
        self.peak = dataclasses.replace(self.peak, tflops=reprobe_fastest_cpu_peak(self.dtype))
        self._reprobed = True
        self.tell(
            f"the cached CPU peak ({old:,.3f} TFLOP/s) was below this run's own speed, so it was "
            f"measured while the CPU was busy; measured again: {self.peak.tflops:,.3f} TFLOP/s"
        )
        return self.peak.tflops
