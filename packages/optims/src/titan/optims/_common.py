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
