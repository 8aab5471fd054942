"""Facts about a model computed without allocating it (meta device)."""

from __future__ import annotations

from typing import Any

from titan.core.registry import ModelFamily


def count_parameters(family: ModelFamily, args: Any) -> int:
    """Parameters of ``family`` built with ``args``, counted on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        model = family.build(args)
    return sum(p.numel() for p in model.parameters())
