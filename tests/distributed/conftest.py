"""Fixtures for the distributed tests: running `titan run` as a user would, and shared runs.

Every run goes through the real CLI in a subprocess (``python -m titan.core.cli run``),
so the local backend, torchrun, the per-rank entry point and DCP are all exercised.

Exactness: the runs are fp32 eager on CPU (bitwise reproducible), without gradient
clipping (a sharded gradient norm is summed in another order, which would change the
clipped gradients in the last bit) and with a constant LR after warmup (so a run that
stops at step 10 and one that goes to 20 share their schedule). The corpus has one
training window per document (see :func:`write_one_window_corpus`), so two ranks with
``local_batch_size=1`` see per step exactly the two micro-batches that one process sees
with gradient accumulation over the same global batch of 2; that one process is the
reference every distributed run is compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# exact_args, run_exact and titan_process: tests/conftest.py (shared with tests/faults).

REFERENCE_STEPS = 20


@pytest.fixture(scope="session")
def reference(run_exact: Callable) -> Any:
    """One process, gradient accumulation over 2 micro-batches, 20 steps straight."""
    return run_exact("reference", f"--training.steps={REFERENCE_STEPS}").ok()


@pytest.fixture(scope="session")
def fsdp_two_ranks(run_exact: Callable) -> Any:
    """Two FSDP2 ranks through torchrun, 10 steps, checkpoint at the end (step-10)."""
    return run_exact(
        "fsdp2",
        "--backend=local",
        "--nproc=2",
        "--training.steps=10",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=10",
    ).ok()
