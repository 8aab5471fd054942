"""[profiling]: torch profiler traces on torchtitan's schedule, from a real CPU run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from titan.core.config.overrides import parse_overrides
from titan.core.errors import ConfigError
from titan.core.launch import prepare_job
from titan.core.train import run_training


def test_six_step_cpu_run_writes_chrome_traces(tmp_path: Path) -> None:
    overrides = parse_overrides(
        [
            "--training.steps=6",
            "--training.seq_len=64",
            "--training.local_batch_size=2",
            f"--job.dump_folder={tmp_path}",
            "--profiling.enable_profiling=true",
            "--profiling.profile_freq=3",
            "--profiling.profiler_warmup=1",
            "--profiling.profiler_active=1",
            "--profiling.save_traces_folder=profile_trace",
            "--profiling.enable_memory_snapshot=true",  # a CPU run: said once, nothing written
        ]
    )
    run_training(prepare_job(None, overrides=overrides))
    folder = tmp_path / "profile_trace"
    # torchtitan's layout: one folder per profiled cycle, named after the step it ends on.
    assert sorted(p.name for p in folder.iterdir()) == ["iteration_3", "iteration_6"]
    for step in (3, 6):
        trace = json.loads((folder / f"iteration_{step}" / "rank0_trace.json").read_text())
        events = trace["traceEvents"]  # Chrome trace format: Perfetto and TensorBoard read it
        names = {e.get("name", "") for e in events}
        # Only the active step is recorded: step N runs as the profiler's step N-1.
        assert f"ProfilerStep#{step - 1}" in names
        assert f"ProfilerStep#{step - 2}" not in names
        assert any(n.startswith("aten::") for n in names)  # the model's operators
        assert all("ph" in e for e in events)
    assert not (tmp_path / "memory_snapshot").exists()


def test_schedule_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match="profile_freq .2. must be at least profiler_warmup"):
        prepare_job(
            None,
            overrides=[("profiling.enable_profiling", "true"), ("profiling.profile_freq", "2")],
        )
