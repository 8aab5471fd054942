"""Validation loss every `validation.eval_interval` steps, logged as val_loss.

Active whenever installed, but idle unless ``[validation] enable = true``
(as in torchtitan, whose ``validation.freq`` is accepted for
``eval_interval``). An evaluation runs the model under ``torch.no_grad`` on
a fixed set of batches (the first ``validation.steps`` of each rank's share
of the validation split, the same ones every time, so values are comparable
across steps), averages the loss over data-parallel ranks and adds it to the
step's metrics. It must not change training: it reads its own loader (the
training loader's position is untouched) and forks the RNG state, so a run
with validation trains bit for bit like one without.
"""

from __future__ import annotations

import weakref
from typing import Any

from titan.core import hookimpl
from titan.core.config.aliases import ConfigAlias

AUTOLOAD = True

_evaluators: weakref.WeakKeyDictionary[Any, Evaluator] = weakref.WeakKeyDictionary()


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    return [ConfigAlias("validation.freq", target="validation.eval_interval")]


@hookimpl
def titan_validate_config(config: Any, active: frozenset[str]) -> None:
    from titan.core.data.loader import check_validation_config

    check_validation_config(config)


@hookimpl
def titan_train_start(trainer: Any) -> None:
    """Open the validation data now, so a missing split fails before the first step."""
    if trainer.config.validation.enable:
        _evaluators[trainer] = Evaluator(trainer)


@hookimpl
def titan_step_end(trainer: Any, step: int, metrics: dict[str, Any]) -> None:
    v = trainer.config.validation
    if not v.enable or step % v.eval_interval:
        return
    evaluator = _evaluators.get(trainer)
    if evaluator is None:
        evaluator = _evaluators[trainer] = Evaluator(trainer)
    loss = evaluator.evaluate()
    if loss is not None:
        metrics["val_loss"] = loss


class Evaluator:
    """Computes the validation loss of ``trainer.model`` on a fixed set of batches."""

    def __init__(self, trainer: Any) -> None:
        from titan.core.data.loader import build_dataloader

        self.trainer = trainer
        v = trainer.config.validation
        self.steps = v.steps
        # No workers: a few batches per evaluation are not worth starting processes each time.
        self.loader = build_dataloader(
            trainer.config,
            trainer.tokenizer,
            dp_rank=trainer.parallel.dp_rank,
            dp_world_size=trainer.parallel.dp_degree,
            split=v.split,
            infinite=False,
            num_workers=0,
        )

    def evaluate(self) -> float | None:
        """Mean loss over the batches, averaged over data-parallel ranks (None if no data)."""
        import torch

        from titan.core.metrics import reduce_mean

        t = self.trainer
        model = t.model
        was_training = model.training
        devices = [t.device] if t.device.type == "cuda" else []
        total = torch.zeros((), device=t.device, dtype=torch.float32)
        count = 0
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                batches = iter(self.loader)  # a fresh pass from the start of the split
                while self.steps == -1 or count < self.steps:
                    batch = next(batches, None)
                    if not _all_ranks_have(batch is not None, t.device):
                        break
                    inputs, labels = (x.to(t.device) for x in batch)
                    with t.train_context(), t.autocast():
                        logits = model(inputs)
                        loss = t.cross_entropy(logits, labels)
                    total += loss.detach().float()
                    count += 1
        finally:
            model.train(was_training)
        if count == 0:
            return None
        return reduce_mean(total / count, t.parallel)


def _all_ranks_have(have: bool, device: Any) -> bool:
    """True while every rank still has a batch: sharded models need all ranks in each forward."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return have
    flag = torch.tensor(1 if have else 0, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
