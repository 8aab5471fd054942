"""Fixtures for the fault tests (helpers in fault_helpers.py, importable by the tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_helpers import REFERENCE_STEPS  # noqa: E402

# exact_args, run_exact and titan_process: tests/conftest.py (shared with tests/distributed).


@pytest.fixture(scope="session")
def reference(run_exact: Callable) -> Any:
    """One process, gradient accumulation over 2 micro-batches, straight through."""
    run = run_exact("reference", f"--training.steps={REFERENCE_STEPS}")
    assert run.proc.returncode == 0, run.proc.stderr
    assert sorted(run.losses) == list(range(1, REFERENCE_STEPS + 1))
    return run
