"""keep_freed_host_memory: a CPU step's buffers are served again without fresh pages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

STEPS = textwrap.dedent(
    """
    import resource, statistics, sys, torch
    from titan.core.host_malloc import keep_freed_host_memory

    if sys.argv[1] == "fixed":
        assert keep_freed_host_memory()

    def step():  # a step's large buffers (MiB of float32), made and freed
        buffers = [torch.ones(n * 2**18) for n in (8, 16, 16, 40, 100)]
        del buffers

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    # The first steps grow the heap until the freed blocks fit the next step's requests
    # (how many depends on where Python's small objects land): not the steady state.
    for _ in range(10):
        step()
    per_step = []
    for _ in range(11):
        before = faults()
        step()
        per_step.append(faults() - before)
    print(statistics.median(per_step))
    """
)


def faults_per_step(mode: str) -> float:
    """Median minor page faults of a steady-state step, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_fixed_thresholds_reuse_the_freed_buffers_instead_of_faulting_in_new_pages() -> None:
    default, fixed = faults_per_step("default"), faults_per_step("fixed")
    # 180 MiB per step are 46,080 pages: glibc's default maps the blocks above its moving
    # threshold (at most 32 MiB: the 40 and 100 MiB ones, 35,840 pages) afresh every step.
    assert default > 20_000, default
    assert fixed < 1_000, (fixed, default)
