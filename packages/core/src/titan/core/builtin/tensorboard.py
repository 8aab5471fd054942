"""Writes logged metrics to TensorBoard when metrics.enable_tensorboard is true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from titan.core import hookimpl

AUTOLOAD = True

_writer: Any = None


def _get_writer(config: Any) -> Any:
    global _writer
    if _writer is None:
        from torch.utils.tensorboard import SummaryWriter

        _writer = SummaryWriter(str(Path(config.job.dump_folder) / config.metrics.save_tb_folder))
    return _writer


@hookimpl
def titan_log_metrics(step: int, metrics: dict[str, Any], config: Any) -> None:
    if not config.metrics.enable_tensorboard:
        return
    writer = _get_writer(config)
    for key, value in metrics.items():
        if key != "step" and isinstance(value, (int, float)):
            writer.add_scalar(key, value, step)
    writer.flush()


@hookimpl
def titan_train_end(trainer: Any) -> None:
    global _writer
    if _writer is not None:
        _writer.close()
        _writer = None
