"""Facts about a model computed without allocating it."""

from __future__ import annotations

from typing import Any

from titan.core.registry import ModelFamily, import_object


def count_parameters(family: ModelFamily, args: Any) -> int:
    """Parameters of ``family`` built with ``args``: the family's own count, else on meta.

    A family that registers ``parameter_count`` is counted from its args without
    importing torch (so ``titan models list`` answers fast); any other family is
    built on the meta device, which is exact for every model but needs torch.
    """
    if family.parameter_count:
        return int(import_object(family.parameter_count)(args))
    return count_parameters_on_meta(family, args)


def count_parameters_on_meta(family: ModelFamily, args: Any) -> int:
    """Parameters of ``family`` built with ``args`` on the meta device (shapes only, no memory)."""
    import torch

    with torch.device("meta"):
        model = family.build(args)
    return sum(p.numel() for p in model.parameters())
