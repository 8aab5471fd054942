"""Shared helpers of the optimization-plugin tests: tiny runs, in-process and on 2+ ranks.

Imported by the test files after putting this folder on ``sys.path`` (the
tests folder has no packages). Everything runs the real code paths:
``prepare_job`` + ``Trainer`` in-process for one rank, and ``torchrun`` of
``optim_probe.py`` (or the ``titan`` CLI) for several.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
PROBE = HERE / "optim_probe.py"

# The debug Llama 3 (6 blocks, dim 256), short sequences, fp32 (bitwise-reproducible eager on CPU).
TINY: list[tuple[str, str]] = [
    ("model.flavor", "debug"),
    ("training.seq_len", "64"),
    ("training.local_batch_size", "2"),
    ("training.mixed_precision_param", "float32"),
    ("metrics.log_freq", "1"),
]


def overrides_to_args(overrides: list[tuple[str, str]]) -> list[str]:
    return [f"--{k}={v}" for k, v in overrides]


def build_trainer(tmp_path: Path, plugins: list[str], overrides: list[tuple[str, str]] = ()) -> Any:
    """A one-process Trainer with ``plugins`` active: model built through every phase."""
    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    job = prepare_job(
        None,
        plugins=plugins,
        overrides=[*TINY, ("job.dump_folder", str(tmp_path)), *overrides],
    )
    return Trainer(job)


def read_metrics(dump_folder: Path) -> list[dict[str, Any]]:
    path = Path(dump_folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rank_env() -> dict[str, str]:
    """One thread per rank, no spinning: the CI machine has 2 cores for all ranks."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def run_probe(
    tmp_path: Path,
    nproc: int,
    scenarios: dict[str, dict[str, Any]],
    timeout: float = 500,
    probe: Path = PROBE,
) -> dict[str, Any]:
    """Run ``probe`` (``optim_probe.py``) on ``nproc`` ranks (torchrun); rank 0's findings per scenario.

    ``scenarios``: name -> {"plugins": [...], "overrides": [[key, value], ...]}; the
    returned dict also holds the ranks' stderr under ``"_log"``.
    """
    spec = tmp_path / "scenarios.json"
    out = tmp_path / "findings.json"
    spec.write_text(json.dumps(scenarios))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--standalone",
        str(probe),
        str(spec),
        str(out),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=rank_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        raise AssertionError(
            f"probe failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}"
        )
    findings = json.loads(out.read_text())
    findings["_log"] = proc.stderr  # the plugins' notes (rank 0)
    return findings


def run_titan(args: list[str], timeout: float = 500) -> subprocess.CompletedProcess:
    """``titan run ARGS`` in a subprocess, as a user runs it; raises with its output on failure."""
    cmd = [sys.executable, "-m", "titan.core.cli", "run", *args]
    proc = subprocess.run(cmd, env=rank_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"titan run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}"
        )
    return proc


class OpCount(TorchDispatchMode):
    """Counts the aten ops run under it by name (``mm``, ``_scaled_dot_product_flash_attention``):
    what a block really computes in forward and in backward, recomputation included."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
