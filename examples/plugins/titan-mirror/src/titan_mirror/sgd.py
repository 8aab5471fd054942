"""sgd: torch's SGD with momentum, as ``--optimizer.name=SGD``.

An optimizer plugin answers two hooks for the names it builds: how many bytes of state
it keeps per parameter (titan's memory checks and ``titan plan`` count them, and refuse a
name no plugin builds), and the optimizer itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from titan.core import hookimpl

NAME = "SGD"


@dataclass
class SgdConfig:
    momentum: float = 0.9
    nesterov: bool = False


@hookimpl
def titan_config_sections():
    return {"sgd": SgdConfig}


@hookimpl
def titan_optimizer_state_bytes(config):
    # one float32 momentum buffer per parameter
    return 4 if config.optimizer.name == NAME else None


@hookimpl
def titan_build_optimizer(model, config):
    if config.optimizer.name != NAME:
        return None
    import torch

    return torch.optim.SGD(
        model.parameters(),
        lr=config.optimizer.lr,
        momentum=config.sgd.momentum,
        nesterov=config.sgd.nesterov,
        weight_decay=config.optimizer.weight_decay,
    )
