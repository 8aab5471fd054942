"""The trainer's own checkpointed state: step, sequences consumed, RNG.

A module of its own so that tools and benchmarks can build and inspect it without the
trainer, and because it is the part of a checkpoint that says where a resume continues.
"""

from __future__ import annotations

from typing import Any

import torch


class TrainState:
    """Step counter, sequences consumed and RNG state, saved with every checkpoint.

    Everything is a tensor, so the checkpoint holds no pickled Python
    objects. Every rank is seeded alike and draws the same random numbers,
    so one copy of the RNG state (DCP keeps one for replicated tensors)
    restores all ranks, whatever their number. ``samples`` (sequences over
    all ranks) lets a resume with another number of ranks find its place in
    the data.
    """

    def __init__(self) -> None:
        self.step = 0
        self.samples = 0

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": torch.tensor(self.step, dtype=torch.int64),
            "samples": torch.tensor(self.samples, dtype=torch.int64),
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.samples = int(state["samples"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng_cuda"])
