"""Peak matmul throughput of the device, the denominator of MFU.

GPUs: the vendors' dense (no sparsity) tensor-core peaks, in bf16 and, where
the hardware has it, float8; a run that trains with float8 linears is held to
the float8 peak. A GPU not in the table gets no MFU ("unknown device") rather
than a wrong one; ``metrics.peak_tflops`` names the peak by hand. CPUs have no
data sheet figure worth trusting (it depends on the cores, their vector units
and how many threads the process may use), so the peak is measured once by a
short matmul probe and cached under ``$TITAN_HOME/cache`` (else
``~/.cache/titan``), keyed by CPU model, threads and dtype. A probe taken
while other work loaded the CPU is too low and would make every later MFU
too high: a run that beats its cached peak measures again
(:func:`reprobe_cpu_peak`) and the cache keeps the higher figure.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (substring of torch.cuda.get_device_name(), bf16 dense TFLOP/s, fp8 dense TFLOP/s or None).
# More specific names first: "H100 PCIe" must win over "H100".
GPU_PEAKS: tuple[tuple[str, float, float | None], ...] = (
    ("H100 PCIe", 756.0, 1513.0),
    ("H100 NVL", 835.0, 1671.0),
    ("H100", 989.0, 1979.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.0, 1979.0),  # also GH200, whose GPU is an H100/H200 die
    ("B200", 2250.0, 4500.0),
    ("A100", 312.0, None),  # no float8 units: float8 runs are held to the bf16 peak
    ("L40S", 362.0, 733.0),
)


@dataclass(frozen=True)
class Peak:
    """What MFU is measured against: the device, its peak (None: unknown) and where it came from."""

    device: str
    tflops: float | None
    source: str  # "table", "config", "probe" or "unknown"

    def describe(self) -> str:
        if self.tflops is None:
            return f"MFU not reported: unknown device '{self.device}' (set metrics.peak_tflops)"
        return f"MFU against {self.tflops:,.1f} TFLOP/s peak of {self.device} ({self.source})"


def gpu_peak(device_name: str, float8: bool) -> float | None:
    """Dense peak TFLOP/s of a GPU by name; None if it is not in the table."""
    for key, bf16, fp8 in GPU_PEAKS:
        if key in device_name:
            return fp8 if float8 and fp8 else bf16
    return None


def resolve_peak(device_type: str, float8: bool, override: float, dtype: str) -> Peak:
    """The peak for this process's device: config override, GPU table, or CPU probe."""
    if device_type == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        label = f"{name} {'float8' if float8 else 'bf16'} dense"
        if override > 0:
            return Peak(name, override, "config")
        peak = gpu_peak(name, float8)
        return Peak(label if peak else name, peak, "table" if peak else "unknown")
    if override > 0:
        return Peak(cpu_name(), override, "config")
    peak, fastest = _fastest_cpu_peak(dtype, cpu_peak)
    return Peak(f"{cpu_name()} {fastest}", peak, "probe")


def _fastest_cpu_peak(dtype: str, probe: Any) -> tuple[float, str]:
    """The faster of the compute dtype's and float32's matmul peak on this CPU, and its dtype.

    CPU autocast runs part of a step in float32, and a CPU without native bf16
    (no AVX512-BF16 or AMX) emulates bf16 matmuls far slower than it runs
    float32 ones: measured on a 2-core AMD EPYC without AVX-512, 0.001 against
    0.10 TFLOP/s, where MFU against the bf16 probe alone read 186%. The
    device's peak is what it can do at best, so the faster one counts.
    """
    peak = probe(dtype)
    if dtype == "float32":
        return peak, dtype
    fp32 = probe("float32")
    return (fp32, "float32") if fp32 > peak else (peak, dtype)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cache_dir() -> Path:
    home = os.environ.get("TITAN_HOME")
    return Path(home) / "cache" if home else Path.home() / ".cache" / "titan"


def _cpu_key(dtype: str) -> str:
    import torch

    return f"{cpu_name()}|threads={torch.get_num_threads()}|{dtype}|torch={torch.__version__}"


def _read_cache(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cpu_peak(dtype: str = "bfloat16", seconds: float = 0.4) -> float:
    """Measured matmul TFLOP/s of this CPU with this process's threads, cached after the first time."""
    import torch

    key, path = _cpu_key(dtype), cache_dir() / "cpu_peak.json"
    cached = _read_cache(path)
    if key in cached:
        return float(cached[key])
    peak = probe_matmul(getattr(torch, dtype), seconds)
    _store(path, key, peak)
    return peak


def reprobe_fastest_cpu_peak(dtype: str = "bfloat16") -> float:
    """:func:`reprobe_cpu_peak` of the compute dtype and of float32: the faster (as resolved)."""
    return _fastest_cpu_peak(dtype, reprobe_cpu_peak)[0]


def reprobe_cpu_peak(dtype: str = "bfloat16", seconds: float = 0.4) -> float:
    """Measure again and keep the higher of the new and the cached figure (cached too).

    For a cached peak that a run has beaten: it was probed while the CPU was
    busy with something else, since no training step outruns a large matmul.
    """
    import torch

    key, path = _cpu_key(dtype), cache_dir() / "cpu_peak.json"
    peak = max(probe_matmul(getattr(torch, dtype), seconds), _read_cache(path).get(key, 0.0))
    _store(path, key, peak)
    return peak


def _store(path: Path, key: str, peak: float) -> None:
    cached = _read_cache(path)
    cached[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)  # atomic: ranks probing at once never leave half a file
    except OSError:
        pass  # an unwritable home costs a probe per run, nothing more


def probe_matmul(dtype: object, seconds: float = 0.4, n: int = 512) -> float:
    """Best TFLOP/s of ``n x n`` matmuls over about ``seconds`` (best-of, to see past contention)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):  # warm-up: first calls pick kernels and fault pages in
        torch.mm(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2 * n**3 / dt / 1e12)
    return best
