"""Keep freed host memory in the process on CPU training runs (glibc ``mallopt``).

On a CPU every activation, gradient and logits buffer of a step is a
``malloc``. glibc serves large blocks with fresh ``mmap`` pages and gives freed
memory back to the kernel (above a threshold that it moves as the program
runs), so a step can fault in tens of MiB of zeroed pages that the previous
step just returned: measured on the debug job, 6,600 to 12,400 page faults
per step in `titan run` against about 100 with fixed thresholds, and how many
depends on the allocation history of the whole process, not on the step. Fixing both
thresholds high makes the blocks freed by one step serve the next. The cost is
that the process keeps its peak heap (it would reach it again at the next step
anyway). GPU runs are left alone: their tensors live in CUDA's caching
allocator. Other C libraries (musl, macOS) have no such knob; nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 2**20
"""Blocks up to this size come from the heap and are reused (glibc's moving threshold stops at 32 MiB)."""
TRIM_THRESHOLD = 1024 * 2**20
"""Free memory at the top of the heap kept before any is returned to the kernel."""


def keep_freed_host_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; True when they were set (glibc only)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # mallopt returns 1 on success; each is worth setting without the other. Fixing either
    # threshold also turns off glibc's moving of both.
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_set = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_set and trim_set
