"""compile: torch.compile each transformer block (after TP and AC, before FSDP), and the loss.

Per block rather than the whole model: the blocks are identical, so one
compiled graph is reused for all of them (compile time does not grow with
depth), and FSDP, applied afterwards, still sees one module per block to
shard and prefetch. Tensor parallel and activation checkpointing are applied
before, so the compiled graph contains their collectives and recomputation.
On CPU, inductor generates C++/OpenMP kernels; the first step pays the
compile (about 15-25 s for the debug model here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from titan.core import hookimpl
from titan.core.config import ConfigAlias
from titan.optims._common import say_once, transformer_blocks

_BUILTIN_BACKENDS = ("inductor", "aot_eager", "eager")


@dataclass
class CompileConfig:
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    """torch.compile mode; reduce-overhead (CUDA graphs) only changes something on GPUs."""
    fullgraph: bool = True
    """Fail on graph breaks instead of silently running pieces eagerly."""
    backend: str = "inductor"
    """inductor generates kernels; aot_eager and eager are for debugging compile itself."""
    model: bool = True
    """Compile each transformer block."""
    loss: bool = False
    """Also compile the loss (cross-entropy over the vocabulary)."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"compile": CompileConfig}


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    return [
        ConfigAlias("training.compile", activates="compile"),
        ConfigAlias("compile.enable", activates="compile"),
        # torchtitan v0.2: components = ["model", "loss"] -> compile.model, compile.loss
        ConfigAlias("compile.components", target="compile.model", item="model"),
        ConfigAlias("compile.components", target="compile.loss", item="loss"),
    ]


@hookimpl
def titan_validate_config(config: Any, active: frozenset[str]) -> None:
    from titan.core.errors import ConfigError

    c = config.compile
    if not (c.model or c.loss):
        raise ConfigError(
            "plugin 'compile' is active but compile.model and compile.loss are both false; "
            "set one of them to true, or remove compile from the plugins"
        )
    tp = getattr(config, "tp", None)
    if c.loss and "tp" in active and tp is not None and tp.loss_parallel:
        raise ConfigError(
            "compile.loss = true cannot compile tp's loss-parallel cross-entropy (torch.compile "
            "fails on it in torch 2.15); set --compile.loss=false, or --tp.loss_parallel=false "
            "to gather the logits and compile a plain loss"
        )
    if c.backend not in _BUILTIN_BACKENDS:
        import torch._dynamo

        known = torch._dynamo.list_backends(exclude_tags=())
        if c.backend not in known:
            raise ConfigError(
                f"compile.backend '{c.backend}' is not a torch.compile backend; "
                f"choose one of: {', '.join(sorted(known))}"
            )


def _compile(fn: Any, c: CompileConfig) -> Any:
    import torch

    return torch.compile(fn, backend=c.backend, mode=c.mode, fullgraph=c.fullgraph)


@hookimpl
def titan_apply_compile(model: Any, config: Any, parallel: Any, loss: Any) -> None:
    """Replace each block by its compiled version (an ``OptimizedModule`` around it).

    With ``compile.loss`` the loss is compiled too: wrapped here, in the compile phase,
    it takes in what earlier phases wrapped (tensor parallel's local loss).
    """
    c = config.compile
    if c.loss:
        loss.wrap(lambda fn: _compile(fn, c))
    if not c.model:
        return
    layers = transformer_blocks(model)
    for name, block in list(layers.named_children()):
        layers.register_module(name, _compile(block, c))
    say_once(
        f"compile: {len(layers)} transformer blocks compiled with {c.backend} "
        f"(mode {c.mode}); the first step includes compile time"
    )
