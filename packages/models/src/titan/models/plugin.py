"""Registers the Llama 2 and Llama 3 families (always active)."""

from __future__ import annotations

from titan.core import hookimpl
from titan.core.registry import ModelFamily, ModelRegistry
from titan.models.llama.args import LLAMA2_FLAVORS, LLAMA3_FLAVORS

AUTOLOAD = True

_BUILDER = "titan.models.llama.model:build_llama"


@hookimpl
def titan_register_models(registry: ModelRegistry) -> None:
    registry.add_family(
        ModelFamily(
            "llama3", dict(LLAMA3_FLAVORS), _BUILDER, "Llama 3 / 3.1 (GQA, rope theta 500000)"
        )
    )
    registry.add_family(
        ModelFamily("llama2", dict(LLAMA2_FLAVORS), _BUILDER, "Llama 2 (rope theta 10000)")
    )
