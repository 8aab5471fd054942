"""Small helpers the optimization plugins share (torch-free at import time).

Kept out of the plugin modules so each of those stays about one optimization;
nothing here is a plugin itself (it has no entry point).
"""

from __future__ import annotations

import sys
from typing import Any

_said: set[str] = set()


def is_main_process() -> bool:
    """Rank 0, or a process that is not part of a distributed job."""
    import os

    return os.environ.get("RANK", "0") == "0"


def say_once(message: str) -> None:
    """Print ``note: message`` once per process, on rank 0 only.

    Plugins run on every rank; a fact about the run (emulated float8, memory
    saved) is worth one line, not one per rank or per layer.
    """
    if message in _said or not is_main_process():
        return
    _said.add(message)
    print(f"note: {message}", file=sys.stderr, flush=True)


def expected_world_size(config: Any) -> int | None:
    """Processes the launch will start, or None when only the rank will know.

    ``launch.nproc_per_node = 0`` means "one per GPU of the machine that
    runs it", which the submitting machine (a Slurm login node, a laptop
    launching SageMaker) cannot know; checks that need the world size then
    run again on the ranks.
    """
    launch = getattr(config, "launch", None)
    if launch is None or launch.nproc_per_node <= 0:
        return None
    return launch.nproc_per_node * max(launch.nnodes, 1)


def expected_dp_shard(config: Any) -> int | None:
    """The FSDP sharding degree the ranks will resolve, or None if not knowable yet."""
    p = config.parallelism
    if p.data_parallel_shard_degree != -1:
        return p.data_parallel_shard_degree
    world = expected_world_size(config)
    if world is None:
        return None
    denominator = p.data_parallel_replicate_degree * p.tensor_parallel_degree
    return world // denominator if denominator and world % denominator == 0 else None


def model_args(config: Any) -> Any | None:
    """The model's hyper-parameters (``model.name`` / ``model.flavor``), or None if unknown.

    Validation hooks receive only the config; the registry is rebuilt from
    the installed plugins (cheap: no torch, modules are already imported).
    """
    from titan.core.errors import TitanError
    from titan.core.plugins import load_plugins
    from titan.core.registry import ModelRegistry

    try:
        registry = ModelRegistry()
        load_plugins().pm.hook.titan_register_models(registry=registry)
        return registry.get(config.model.name).flavor(config.model.flavor)
    except TitanError:
        return None  # core's own validation reports unknown models and flavors


def transformer_blocks(model: Any) -> Any:
    """``model.layers``: the container of transformer blocks every plugin works on."""
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(layers, "named_children"):
        from titan.core.errors import PluginError

        raise PluginError(
            f"model {type(model).__name__} has no `layers` container of transformer blocks; "
            "the optimization plugins need one (as titan's Llama has)"
        )
    return layers
