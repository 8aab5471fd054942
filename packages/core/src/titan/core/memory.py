"""Peak memory since the last log step, in GiB and as a share of the device.

GPU: torch's caching allocator counts "active" bytes (held by live tensors)
and "reserved" bytes (held from the driver, what ``nvidia-smi`` sees and what
runs out first); both peaks are read and reset at every log step, so each log
line tells about its own steps, not the worst moment since start. CPU: the
process's peak resident set (VmHWM), reset through ``/proc/self/clear_refs``
where Linux allows it, against the machine's RAM.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

GIB = 2**30


class MemoryMonitor:
    """``read_and_reset()`` -> memory metrics of the steps since the previous call."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.is_cuda = getattr(device, "type", str(device)) == "cuda"
        if self.is_cuda:
            import torch

            self.total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self.total = _meminfo_total()
            _reset_rss_peak()

    def read_and_reset(self) -> dict[str, float]:
        if self.is_cuda:
            import torch

            stats = torch.cuda.memory_stats(self.device)
            active = stats.get("active_bytes.all.peak", 0)
            reserved = stats.get("reserved_bytes.all.peak", 0)
            torch.cuda.reset_peak_memory_stats(self.device)
            return {
                "memory_active_gib": active / GIB,
                "memory_active_pct": 100 * active / self.total,
                "memory_reserved_gib": reserved / GIB,
                "memory_reserved_pct": 100 * reserved / self.total,
            }
        rss = _rss_peak()
        _reset_rss_peak()
        out = {"memory_rss_gib": rss / GIB}
        if self.total:
            out["memory_rss_pct"] = 100 * rss / self.total
        return out


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _rss_peak() -> int:
    """Peak resident bytes since the last reset (VmHWM); getrusage where /proc is missing."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


def _reset_rss_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    # Not Linux, or not allowed: the peak then runs from process start.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _meminfo_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
