"""What a checkpoint saves of the model, the optimizer and per-rank state, as DCP Statefuls.

Adapters between the training objects and DCP: the model's and the optimizer's state
dicts keyed by parameter name (so they reshard on load), and per-rank state stored under
a key naming the rank and world size (it loads only into the same data-parallel layout).
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful


class ModelState(Stateful):
    """The model's parameters as DCP sees them (sharded DTensors under FSDP)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state_dict)


class OptimizerState(Stateful):
    """Optimizer state keyed by parameter name (not index), so it survives resharding."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state_dict)


class RankLocalState(Stateful):
    """State that differs per data-parallel rank (a data loader's position in its shard).

    DCP keeps one copy of a non-tensor value whose key is the same on every
    rank, so each rank's state goes under its own key, ``dp<rank>of<world>``.
    The value is one ``torch.save`` blob (read back with ``weights_only``):
    its structure may change between save and load (lists grow), which DCP's
    per-key loading of nested values would not allow.
    """

    def __init__(self, inner: Any, dp_rank: int, dp_world_size: int) -> None:
        self.inner = inner
        self.key = f"dp{dp_rank}of{dp_world_size}"

    def state_dict(self) -> dict[str, Any]:
        buf = io.BytesIO()
        torch.save(self.inner.state_dict(), buf)
        return {self.key: buf.getvalue()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        blob = state_dict[self.key]
        self.inner.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
