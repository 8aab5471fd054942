"""keep_freed_host_memory: a CPU step's buffers are served again without fresh pages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

STEPS = textwrap.dedent(
    """
    import resource, sys, torch
    from titan.core.host_malloc import keep_freed_host_memory

    if sys.argv[1] == "fixed":
        assert keep_freed_host_memory()

    def step():  # a step's large buffers (MiB of float32), made and freed
        buffers = [torch.ones(n * 2**18) for n in (8, 16, 16, 40, 100)]
        del buffers

    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
)


def faults_per_step(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_fixed_thresholds_reuse_the_freed_buffers_instead_of_faulting_in_new_pages() -> None:
    default, fixed = faults_per_step("default"), faults_per_step("fixed")
    # 180 MiB per step are 46,080 pages: glibc's default maps most of them afresh each step.
    assert default > 20_000, default
    assert fixed < default / 4, (fixed, default)
