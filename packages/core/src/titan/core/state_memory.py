"""The memory a model's training state takes on each device, before any activation.

titan keeps the weights in float32 (FSDP2 all-gathers them in the compute
dtype for each forward and frees them again; on one process autocast casts
them on the fly), their gradients in float32 (the weights' dtype, reduced in
``training.mixed_precision_reduce``), and Adam/AdamW's two moments in
float32: 4 + 4 + 8 = 16 bytes per parameter. FSDP shards all three over
``dp_shard`` ranks and tensor parallelism over ``tp`` more; replication
(``dp_replicate``, HSDP) keeps whole copies. float8 training (fp8, fp8-ag)
changes none of this: the float32 weights stay the master copy, float8 exists
only in the matmuls and all-gathers.

Torch-free: computed from the parameter count before anything launches
(:func:`titan.core.checks.check_job`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WEIGHT_BYTES = 4
GRAD_BYTES = 4
ADAMW_STATE_BYTES = 8.0
"""AdamW's optimizer state per parameter: two float32 tensors (exp_avg, exp_avg_sq). Another
optimizer's figure comes from its plugin (``titan_optimizer_state_bytes``)."""


@dataclass(frozen=True)
class StateMemory:
    """Bytes per device of the weights, gradients and optimizer state of one run."""

    parameters: int
    """Parameters of the whole model."""
    shards: int
    """Ways the state is split: dp_shard x tp."""
    weights: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer

    @property
    def bytes_per_parameter(self) -> int:
        return round((self.total * self.shards) / self.parameters) if self.parameters else 0


def state_memory(
    parameters: int, shards: int, optimizer_bytes: float = ADAMW_STATE_BYTES
) -> StateMemory:
    """Per-device state of a model with ``parameters`` parameters split ``shards`` ways.

    FSDP2 shards each parameter along its first dimension and pads it to a
    multiple of the shard count; the padding is at most one row per tensor,
    too little to count here.
    """
    per_device = math.ceil(parameters / max(shards, 1))
    return StateMemory(
        parameters=parameters,
        shards=shards,
        weights=per_device * WEIGHT_BYTES,
        grads=per_device * GRAD_BYTES,
        optimizer=math.ceil(per_device * optimizer_bytes),
    )


def shards_needed(
    parameters: int, memory_bytes: int, optimizer_bytes: float = ADAMW_STATE_BYTES
) -> int:
    """The fewest ways the state must be split to fit ``memory_bytes`` per device."""
    whole = state_memory(parameters, 1, optimizer_bytes).total
    return max(1, math.ceil(whole / memory_bytes))
