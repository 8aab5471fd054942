"""compile: torch.compile each transformer block (after TP and AC, before FSDP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from titan.core import hookimpl
from titan.core.config import ConfigAlias


@dataclass
class CompileConfig:
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    fullgraph: bool = True
    """Fail on graph breaks instead of silently running pieces eagerly."""
    backend: str = "inductor"


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"compile": CompileConfig}


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    return [ConfigAlias("training.compile", activates="compile")]


@hookimpl
def titan_apply_compile(model: Any, config: Any, parallel: Any) -> None:
    """Per-block compile: each block compiles once and is reused, unlike a whole-model graph."""
    import torch

    c = config.compile
    for name, block in list(model.layers.named_children()):
        compiled = torch.compile(block, backend=c.backend, mode=c.mode, fullgraph=c.fullgraph)
        model.layers.register_module(name, compiled)
