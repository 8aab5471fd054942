"""zloss: adds weight x mean(log(Z)^2) to the loss, Z the softmax normaliser (PaLM's z-loss).

For each token, ``log Z = logsumexp(logits)`` over the vocabulary. The penalty
``weight * mean_tokens((log Z)^2)`` keeps the logits from drifting to large
values, which stabilises bf16/fp8 training; PaLM used ``weight = 1e-4``.

It uses one hook, ``titan_loss_terms``: titan adds the returned term to the
cross-entropy of each micro-batch (so it works with gradient accumulation),
logs its step mean as ``z_loss``, and gathers it when tensor parallel keeps
the logits sharded over the vocabulary (the logsumexp below is written with
max/sum reductions, which DTensor computes across the shards).

Activate with ``titan run --plugins zloss``; set the weight with
``--zloss.weight=1e-3`` or ``[zloss] weight = 1e-3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from titan.core import hookimpl

METRIC = "z_loss"


@dataclass
class ZLossConfig:
    weight: float = 1e-4
    """Multiplier of mean(logsumexp(logits)^2); 0 turns the penalty off."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"zloss": ZLossConfig}


@hookimpl
def titan_validate_config(config: Any) -> None:
    from titan.core.errors import ConfigError

    if config.zloss.weight < 0:
        raise ConfigError(
            f"zloss.weight is {config.zloss.weight}, but a penalty weight cannot be negative; "
            "set --zloss.weight=1e-4 (PaLM's value) or 0 to turn it off"
        )


def log_normaliser(logits: Any) -> Any:
    """``logsumexp(logits, -1)`` in float32, from reductions DTensor shards (max, sum)."""
    x = logits.float()
    peak = x.amax(dim=-1, keepdim=True).detach()  # for stability; the gradient needs no max
    return (x - peak).exp().sum(dim=-1).log() + peak.squeeze(-1)


def z_loss(logits: Any, weight: float) -> Any:
    """``weight * mean((log Z)^2)`` over the micro-batch's tokens."""
    return weight * log_normaliser(logits).pow(2).mean()


@hookimpl
def titan_loss_terms(trainer: Any, logits: Any) -> dict[str, Any]:
    return {METRIC: z_loss(logits, trainer.config.zloss.weight)}
