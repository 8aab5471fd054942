"""How fast a job trains, how long it takes and what it costs, before it launches.

tokens/s per device = MFU x the device's peak FLOP/s / FLOPs per token, where

* FLOPs per token is the MFU metric's own count
  (:func:`titan.core.flops.flops_per_token`: 6 x non-embedding parameters +
  12 x layers x dim x seq_len), so a plan and a run's logged MFU speak of
  the same work;
* the peak is :mod:`titan.core.device_peaks`' GPU table for the layout's
  GPU model (float8's peak when fp8 converts the linears, as the MFU metric
  does), or ``metrics.peak_tflops`` when set;
* the MFU comes from ONE published source, :data:`CALIBRATION`: torchtitan's
  Llama 3.1 8B table on 8 x H100 (FSDP / + torch.compile / + Float8),
  turned into an MFU per plugin set with the same FLOPs count. A job whose
  activation checkpointing recomputes more (or less) than the source's
  (selective per op) gets that MFU scaled by the work done per counted FLOP.

``benchmarks/plan_speed.py`` predicts the seed article's 4 x ml.p5.48xlarge
table with it (out of sample). Time: ``training.steps`` (or ``--tokens``) x
tokens per step / (tokens/s of all devices). Cost: instance-hours x a price per
instance-hour that the user gives (titan has no price table), less a spot
discount the user gives; without a price, GPU-hours.

Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from titan.core.block_memory import Shapes
from titan.core.device_peaks import gpu_peak
from titan.core.errors import ConfigError
from titan.core.flops import flops_per_token
from titan.core.layout import GIB

if TYPE_CHECKING:
    from titan.core.launch import PreparedJob
    from titan.core.layout import LaunchLayout


@dataclass(frozen=True)
class Published:
    """One published throughput: tokens/s per GPU of a plugin set."""

    plugins: str
    tokens_per_second: float
    float8: bool


CALIBRATION_SOURCE = (
    "torchtitan docs/performance.md, Table 1: Llama 3.1 8B, 8 x H100, FSDP, local batch 2 "
    "x seq 8192, selective (op) activation checkpointing"
)
CALIBRATION_SHAPES = Shapes(
    dim=4096, n_layers=32, n_heads=32, kv_heads=8, head_dim=128, ffn=14336, vocab=128256
)
"""Llama 3.1 8B, the source's model."""
CALIBRATION_SEQ = 8192
CALIBRATION_GPU = "H100"
CALIBRATION_AC = "op"
CALIBRATION: tuple[Published, ...] = (
    Published("baseline", 5762, False),
    Published("compile", 6667, False),
    Published("compile+fp8", 8532, True),
)


def non_embedding_parameters(m: Shapes) -> int:
    """Blocks, final norm and output projection (what the MFU metric counts)."""
    return m.n_layers * m.block_params + m.head_params


def model_flops(m: Shapes, seq: int) -> int:
    return flops_per_token(non_embedding_parameters(m), m.n_layers, m.dim, seq)


def recompute_flops(m: Shapes, seq: int, ac: str, cuda: bool = True) -> int:
    """Forward FLOPs per token done again in backward by activation checkpointing.

    ``full``: every block's forward (its matmuls, 2 x parameters, and attention,
    4 x dim x seq); every N-th block for a layer frequency N; ``op``: the
    matmuls whose outputs are not kept (wk, wo, w3: every second one) and, off
    GPUs, attention.
    """
    block = 2 * m.block_linear_params + 4 * m.dim * seq
    if ac == "none":
        return 0
    if ac == "full":
        return m.n_layers * block
    if ac.isdigit():
        return (m.n_layers // int(ac)) * block
    redo = 2 * (m.dim * m.kv + m.q * m.dim + m.dim * m.ffn)
    return m.n_layers * (redo + (0 if cuda else 4 * m.dim * seq))


def calibrated_mfu() -> dict[str, float]:
    """MFU of each calibration row (against the peak the MFU metric would use)."""
    flops = model_flops(CALIBRATION_SHAPES, CALIBRATION_SEQ)
    out = {}
    for row in CALIBRATION:
        peak = gpu_peak(CALIBRATION_GPU, row.float8)
        assert peak
        out[row.plugins] = row.tokens_per_second * flops / (peak * 1e12)
    return out


def plugin_set(active: frozenset[str] | set[str]) -> tuple[str, list[str]]:
    """The calibration row for a set of active plugins, and what the row does not cover."""
    notes = []
    if "fp8" in active:
        if "compile" not in active:
            notes.append(
                "fp8 without compile planned with the compile+fp8 figure (the source has no "
                "fp8-only row; torchao's casts are not fused without compile: likely optimistic)"
            )
        if "fp8-ag" in active:
            notes.append("fp8-ag planned as fp8: the calibration source has no fp8-ag row")
        return "compile+fp8", notes
    if "compile" in active:
        return "compile", notes
    return "baseline", notes


@dataclass(frozen=True)
class SpeedPlan:
    flops_per_token: int
    mfu: float | None
    """MFU of the plugin set, against ``peak_tflops`` (after the AC adjustment)."""
    peak_tflops: float | None
    peak_source: str
    row: str
    """The calibration row used."""
    tokens_per_second_per_device: float | None
    devices: int
    nodes: int
    tokens_per_step: int
    steps: int
    tokens: int
    """Tokens to train: steps x tokens per step, or --tokens."""
    seconds: float | None
    price_per_hour: float | None
    spot_discount: float
    notes: tuple[str, ...] = ()

    @property
    def tokens_per_second(self) -> float | None:
        t = self.tokens_per_second_per_device
        return None if t is None else t * self.devices

    @property
    def hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600

    @property
    def gpu_hours(self) -> float | None:
        return None if self.hours is None else self.hours * self.devices

    @property
    def instance_hours(self) -> float | None:
        return None if self.hours is None else self.hours * self.nodes

    @property
    def cost(self) -> float | None:
        if self.price_per_hour is None or self.instance_hours is None:
            return None
        return self.instance_hours * self.price_per_hour * (1 - self.spot_discount)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops_per_token": self.flops_per_token,
            "mfu": self.mfu,
            "peak_tflops": self.peak_tflops,
            "peak_source": self.peak_source,
            "calibration_row": self.row,
            "calibration_source": CALIBRATION_SOURCE,
            "tokens_per_second_per_device": self.tokens_per_second_per_device,
            "tokens_per_second": self.tokens_per_second,
            "devices": self.devices,
            "nodes": self.nodes,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.steps,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "gpu_hours": self.gpu_hours,
            "instance_hours": self.instance_hours,
            "price_per_hour": self.price_per_hour,
            "spot_discount": self.spot_discount,
            "cost": self.cost,
            "notes": list(self.notes),
        }


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_tokens(text: str) -> int:
    """``1T`` -> 10**12; ``500B``, ``2.5M``, ``1e9``, ``1000`` also work (K/M/B/T, powers of 10)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMbBgGtT]?)\s*", text or "")
    if not match:
        raise ConfigError(
            f"--tokens {text!r} is not a token count; write e.g. 1T, 500B, 20M or 1000000"
        )
    value = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    if value < 1:
        raise ConfigError(f"--tokens {text!r} is less than one token; e.g. --tokens 1T")
    return int(round(value))


def plan_speed(
    job: PreparedJob,
    layout: LaunchLayout,
    tokens: int | None = None,
    price_per_hour: float | None = None,
    spot_discount: float | None = None,
) -> SpeedPlan:
    """Tokens/s, time and cost of ``job`` on ``layout`` (see the module docstring)."""
    from titan.core.checks import degrees, grad_accum_steps, model_args

    c = job.config
    args = model_args(job)
    m = Shapes.of(args, f"{c.model.name}/{c.model.flavor}")
    seq = c.training.seq_len
    flops = model_flops(m, seq)
    active = job.plugins.active
    row, notes = plugin_set(active)
    float8 = "fp8" in active
    dp_rep, dp_shard, tp = degrees(c, layout)
    dp = dp_rep * dp_shard
    accum = grad_accum_steps(c.training, dp)
    tokens_per_step = c.training.local_batch_size * seq * dp * accum
    steps = c.training.steps if tokens is None else -(-tokens // tokens_per_step)
    tokens = tokens if tokens is not None else steps * tokens_per_step

    d = layout.device
    peak: float | None = None
    source = "unknown"
    if c.metrics.peak_tflops > 0:
        peak, source = c.metrics.peak_tflops, "metrics.peak_tflops"
    elif d.kind == "cuda" and d.model:
        peak = gpu_peak(d.model, float8)
        source = f"{d.model}, {'float8' if float8 else 'bf16'} dense"
    mfu = tps = seconds = None
    if peak is None:
        notes.append(
            f"speed not planned: no peak FLOP/s known for {d.describe() if d.kind != 'unknown' else 'this device'}"
            " (titan's GPU table covers NVIDIA data-center GPUs; set metrics.peak_tflops)"
        )
    else:
        from titan.core.block_memory import job_ac_mode

        ac = job_ac_mode(job)
        cuda = d.kind != "cpu"
        base = calibrated_mfu()[row]
        cal_work = model_flops(CALIBRATION_SHAPES, CALIBRATION_SEQ) + recompute_flops(
            CALIBRATION_SHAPES, CALIBRATION_SEQ, CALIBRATION_AC
        )
        cal_ratio = model_flops(CALIBRATION_SHAPES, CALIBRATION_SEQ) / cal_work
        job_ratio = flops / (flops + recompute_flops(m, seq, ac, cuda))
        mfu = base * job_ratio / cal_ratio
        tps = mfu * peak * 1e12 / flops
        seconds = tokens / (tps * layout.world_size)
        if tp > 1:
            notes.append("tensor parallel is not in the calibration source: planned as FSDP")
        if "H100" not in (d.model or "") and c.metrics.peak_tflops <= 0:
            notes.append(
                f"MFU calibrated on H100s and applied to {d.model} as is (its memory bandwidth "
                "and capacity may change it)"
            )
    if spot_discount is not None and not 0 <= spot_discount < 1:
        raise ConfigError(
            f"--spot-discount {spot_discount} must be a fraction from 0 to below 1 (0.7 = 70% off)"
        )
    if price_per_hour is not None and price_per_hour < 0:
        raise ConfigError(f"--price-per-hour {price_per_hour} is negative; give a price per hour")
    spot = bool(getattr(getattr(c, "sagemaker", None), "spot", False))
    if spot and spot_discount is None and price_per_hour is not None:
        notes.append("sagemaker.spot is on but no --spot-discount was given: priced on-demand")
    return SpeedPlan(
        flops_per_token=flops,
        mfu=mfu,
        peak_tflops=peak,
        peak_source=source,
        row=row,
        tokens_per_second_per_device=tps,
        devices=layout.world_size,
        nodes=layout.nodes,
        tokens_per_step=tokens_per_step,
        steps=steps,
        tokens=tokens,
        seconds=seconds,
        price_per_hour=price_per_hour,
        spot_discount=spot_discount or 0.0,
        notes=tuple(notes),
    )


def plan_line(job: PreparedJob, layout: LaunchLayout) -> str:
    """The plan's short form, one line: ``titan run --dry-run`` prints it before the command."""
    from titan.core.memory_plan import plan_memory

    memory = plan_memory(job, layout)
    have = (
        f" of {memory.device_memory / GIB:.1f} GiB"
        if memory.device_memory
        else " (device memory unknown)"
    )
    parts = [f"peak {memory.peak / GIB:.1f}{have} per device ({memory.peak_phase})"]
    speed = plan_speed(job, layout)
    if speed.tokens_per_second_per_device is not None and speed.seconds is not None:
        hours, rest = divmod(int(speed.seconds), 3600)
        parts.append(
            f"~{speed.tokens_per_second_per_device:,.0f} tok/s per device, {speed.steps} steps "
            f"in {hours}:{rest // 60:02d}:{rest % 60:02d} on {speed.devices} device(s)"
        )
    return f"plan: {'; '.join(parts)} (`titan plan` shows every term, time and cost)"
