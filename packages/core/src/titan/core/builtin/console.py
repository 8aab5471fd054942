"""Prints training progress to the terminal with rich (rank 0)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from titan.core import hookimpl

AUTOLOAD = True

_console = Console(stderr=True, highlight=False, soft_wrap=True)


@hookimpl
def titan_log_metrics(step: int, metrics: dict[str, Any], config: Any) -> None:
    loss = metrics["loss"]
    parts = [
        f"[bold]step {step:>5}/{config.training.steps}[/]",
        f"loss [cyan]{loss:7.4f}[/]",
        f"grad_norm {metrics.get('grad_norm', 0.0):7.3f}",
        f"lr {metrics.get('lr', 0.0):.2e}",
        f"tok/s {metrics.get('tokens_per_second', 0.0):9,.0f}",
        f"step {metrics.get('step_time', 0.0) * 1000:7.1f} ms",
    ]
    if "memory_gib" in metrics:
        parts.append(f"mem {metrics['memory_gib']:.2f} GiB")
    if "val_loss" in metrics:
        parts.append(f"val_loss [magenta]{metrics['val_loss']:7.4f}[/]")
    _console.print("  ".join(parts))


@hookimpl
def titan_train_end(trainer: Any) -> None:
    if trainer.parallel.is_main and trainer.first_loss is not None:
        _console.print(
            f"[bold green]done[/]: loss {trainer.first_loss:.4f} (first) -> "
            f"{trainer.last_loss:.4f} (last) "
            f"in {trainer.train_state.step} steps; metrics in {trainer.dump_folder}/metrics.jsonl"
        )
