"""torch profiler traces and CUDA memory snapshots on torchtitan's schedule ([profiling]).

Every torchtitan TOML has a ``[profiling]`` section; this plugin reads it with
the same keys and the same schedule, so a torchtitan user finds the files
where torchtitan would write them (below ``job.dump_folder``):

* ``enable_profiling``: every ``profile_freq`` steps, the last
  ``profiler_active`` steps are recorded after ``profiler_warmup`` warm-up
  steps, and written as a Chrome trace ``<save_traces_folder>/iteration_<N>/
  rank<R>_trace.json`` (the Chrome trace format: opens in https://ui.perfetto.dev
  and chrome://tracing). CPU activity always; CUDA kernels when a GPU is used.
* ``enable_memory_snapshot`` (GPU only): CUDA allocator history, dumped every
  ``profile_freq`` steps as ``<save_memory_snapshot_folder>/iteration_<N>/
  rank<R>_memory_snapshot.pickle`` (drag into https://pytorch.org/memory_viz).
  On a CPU run it says once that there is nothing to snapshot.

Built in and always loaded: the section exists for every run, and stays off
until ``enable_profiling`` / ``enable_memory_snapshot`` is true.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from titan.core import hookimpl

AUTOLOAD = True

MEMORY_SNAPSHOT_MAX_ENTRIES = 100_000
"""Allocator events kept for a snapshot (torchtitan's value)."""


@dataclass
class ProfilingSection:
    """torchtitan's [profiling] keys, with torchtitan's defaults."""

    enable_profiling: bool = False
    save_traces_folder: str = "profile_traces"
    """Relative to job.dump_folder."""
    profile_freq: int = 10
    """One profiling cycle (and memory snapshot) every this many steps."""
    profiler_active: int = 1
    """Steps recorded at the end of each cycle."""
    profiler_warmup: int = 3
    """Steps the profiler runs unrecorded before them (its start-up cost stays out)."""
    enable_memory_snapshot: bool = False
    """CUDA allocator history (GPU runs only)."""
    save_memory_snapshot_folder: str = "memory_snapshot"
    """Relative to job.dump_folder."""


_profiler: Any = None
_memory: dict[str, Any] = {}


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"profiling": ProfilingSection}


@hookimpl
def titan_validate_config(config: Any, active: frozenset[str]) -> None:
    from titan.core.errors import ConfigError

    c = config.profiling
    if not (c.enable_profiling or c.enable_memory_snapshot):
        return
    if c.profile_freq < 1:
        raise ConfigError(f"profiling.profile_freq must be 1 or more, got {c.profile_freq}")
    if c.enable_profiling and (
        c.profiler_active < 1
        or c.profiler_warmup < 0
        or c.profile_freq < c.profiler_active + c.profiler_warmup
    ):
        raise ConfigError(
            f"profiling.profile_freq ({c.profile_freq}) must be at least profiler_warmup "
            f"({c.profiler_warmup}) + profiler_active ({c.profiler_active}), with "
            "profiler_active 1 or more; e.g. --profiling.profiler_warmup=1 "
            "--profiling.profiler_active=1"
        )


@hookimpl
def titan_train_start(trainer: Any) -> None:
    global _profiler
    import torch

    c = trainer.config.profiling
    base = Path(trainer.config.job.dump_folder)
    rank = trainer.parallel.rank
    if c.enable_profiling:
        folder = base / c.save_traces_folder

        def write_trace(prof: Any) -> None:
            out = folder / f"iteration_{prof.step_num}"
            out.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(out / f"rank{rank}_trace.json"))

        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        warmup, active = c.profiler_warmup, c.profiler_active
        _profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(
                wait=c.profile_freq - warmup - active, warmup=warmup, active=active
            ),
            on_trace_ready=write_trace,
            record_shapes=True,
        )
        _profiler.start()
        _profiler.step_num = trainer.step  # a resumed run keeps the schedule
        _tell(trainer, f"profiling: traces every {c.profile_freq} steps in {folder}")
    if c.enable_memory_snapshot:
        if trainer.device.type != "cuda":
            _tell(trainer, "profiling: memory snapshots record CUDA memory; none on this run")
            return
        torch.cuda.memory._record_memory_history(max_entries=MEMORY_SNAPSHOT_MAX_ENTRIES)
        _memory.update(folder=base / c.save_memory_snapshot_folder, rank=rank)


@hookimpl
def titan_step_end(trainer: Any, step: int, metrics: dict[str, Any]) -> None:
    if _profiler is not None:
        _profiler.step()
    if _memory and step % trainer.config.profiling.profile_freq == 0:
        _dump_memory_snapshot(step)


def _dump_memory_snapshot(step: int) -> None:
    import pickle

    import torch

    out = _memory["folder"] / f"iteration_{step}"
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"rank{_memory['rank']}_memory_snapshot.pickle").open("wb") as f:
        pickle.dump(torch.cuda.memory._snapshot(), f)


@hookimpl
def titan_train_end(trainer: Any) -> None:
    global _profiler
    if _profiler is not None:
        _profiler.stop()
        _profiler = None
    if _memory:
        import torch

        torch.cuda.memory._record_memory_history(enabled=None)
        _memory.clear()


def _tell(trainer: Any, message: str) -> None:
    if trainer.parallel.is_main:
        print(message, file=sys.stderr, flush=True)
