"""Checkpoints with torch.distributed.checkpoint (DCP): save, find the newest, resume.

Layout: ``<dump_folder>/<checkpoint.folder>/step-<N>/``. A checkpoint is
written to ``step-<N>.tmp`` and renamed once every rank has finished, so a
folder named ``step-<N>`` is always complete; a crash mid-save leaves only a
``.tmp`` folder, which resume ignores.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

_STEP_DIR = re.compile(r"^step-(\d+)$")


class ModelState(Stateful):
    """The model's parameters as DCP sees them (sharded DTensors under FSDP)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state_dict)


class OptimizerState(Stateful):
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state_dict)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def complete_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / ".metadata").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


class CheckpointManager:
    """Saves every ``interval`` steps and at the end; resumes from the newest complete one."""

    def __init__(
        self,
        folder: Path,
        states: dict[str, Any],
        *,
        enabled: bool,
        interval: int,
        keep_latest_k: int = 0,
    ) -> None:
        self.folder = folder
        self.states = states
        self.enabled = enabled
        self.interval = interval
        self.keep_latest_k = keep_latest_k

    def load(self, step: int = -1) -> int:
        """Restore the states from checkpoint ``step`` (-1: newest). Returns the step, 0 if none."""
        if not self.enabled:
            return 0
        found = dict(complete_checkpoints(self.folder))
        if not found:
            return 0
        chosen = max(found) if step == -1 else step
        if chosen not in found:
            from titan.core.errors import ConfigError

            raise ConfigError(
                f"no complete checkpoint for step {chosen} in '{self.folder}' (have: "
                f"{', '.join(map(str, sorted(found)))}); set checkpoint.load_step"
            )
        dcp.load(self.states, checkpoint_id=str(found[chosen]))
        return chosen

    def should_save(self, step: int, last: bool) -> bool:
        return self.enabled and (last or step % self.interval == 0)

    def save(self, step: int) -> Path:
        final = self.folder / f"step-{step}"
        tmp = self.folder / f"step-{step}.tmp"
        if _is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
        _barrier()
        dcp.save(self.states, checkpoint_id=str(tmp))
        _barrier()
        if _is_main():
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            self._prune()
        _barrier()
        return final

    def _prune(self) -> None:
        if self.keep_latest_k <= 0:
            return
        for _, path in complete_checkpoints(self.folder)[: -self.keep_latest_k]:
            shutil.rmtree(path, ignore_errors=True)
