"""optimizer: torch's AdamW and Adam, the optimizers titan builds without another plugin.

They come through the same hooks a third party's optimizer does
(``titan_optimizer_state_bytes``, ``titan_build_optimizer``), answering last, so a
plugin can build another optimizer (``optimizer.name``) or its own AdamW.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from titan.core import hookimpl

if TYPE_CHECKING:
    import torch

    from titan.core.config.job import JobConfig
    from titan.core.parallel import ParallelDims

AUTOLOAD = True

BUILT_IN = ("AdamW", "Adam")
STATE_BYTES = 8
"""Two float32 tensors per parameter (exp_avg, exp_avg_sq) for either optimizer."""

IMPLEMENTATIONS = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
}


@hookimpl(trylast=True)
def titan_optimizer_state_bytes(config: JobConfig) -> float | None:
    return STATE_BYTES if config.optimizer.name in BUILT_IN else None


@hookimpl(trylast=True)
def titan_build_optimizer(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> torch.optim.Optimizer | None:
    o = config.optimizer
    if o.name not in BUILT_IN:
        return None
    import torch

    cls = {"AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}[o.name]
    return cls(model.parameters(), **adam_arguments(config), **IMPLEMENTATIONS[o.implementation])


def adam_arguments(config: JobConfig) -> dict[str, Any]:
    """``[optimizer]``'s settings as the keyword arguments every Adam-family optimizer takes.

    For optimizer plugins that build another Adam (torchao's low-bit ones, say) from the
    same keys, so ``--optimizer.lr`` and the betas mean the same whichever is built.
    """
    o = config.optimizer
    return {"lr": o.lr, "betas": (o.beta1, o.beta2), "eps": o.eps, "weight_decay": o.weight_decay}
