"""Training progress on the console (rank 0): a live display in a terminal, lines elsewhere.

When both stdout and stderr are terminals, a rich live display (on stderr)
shows step/total with a bar, loss, tokens/s per device, MFU, memory, elapsed
time and ETA, redrawn in place at every log step (elapsed and ETA tick in
between). Anything else printed meanwhile (notes, validation) scrolls above
it. When output goes to a file or pipe (Slurm, SageMaker, ``| tee``), each log
step is one plain line, so logs stay greppable and free of control codes.
Set ``TITAN_PLAIN=1`` to get lines in a terminal too.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

from titan.core import hookimpl

AUTOLOAD = True

_display: _Display | None = None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def wants_live() -> bool:
    """A live display only where a person watches: both streams on a terminal."""
    if os.environ.get("TITAN_PLAIN") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty() and sys.stderr.isatty()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _memory(metrics: dict[str, Any]) -> str:
    for key in ("memory_reserved", "memory_rss"):
        if f"{key}_gib" in metrics:
            pct = metrics.get(f"{key}_pct")
            return f"{metrics[f'{key}_gib']:.2f} GiB" + (f" ({pct:.0f}%)" if pct else "")
    return "n/a"


def _mfu(metrics: dict[str, Any]) -> str:
    return f"{metrics['mfu']:.1f}%" if "mfu" in metrics else "n/a"


class _Display:
    """Formats log steps; owns the rich Live when in a terminal."""

    def __init__(self, total_steps: int, live: bool) -> None:
        self.total = total_steps
        self.console = _stderr_console()
        self.start = time.monotonic()
        self.first: tuple[int, float] | None = None  # (step, time) of the first log step
        self.eta_at: tuple[float, float] | None = None  # (eta seconds, time computed)
        self.step = 0
        self.metrics: dict[str, Any] = {}
        self.live: Any = None
        if live:
            from rich.live import Live

            self.live = Live(self, console=self.console, refresh_per_second=2, redirect_stdout=True)
            self.live.start()
            atexit.register(self.close)  # a crash must not leave the cursor hidden

    # -- figures -------------------------------------------------------------

    def _eta(self, now: float) -> float | None:
        if self.eta_at is None:
            return None
        eta, at = self.eta_at
        return max(0.0, eta - (now - at))

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (step, now)  # step 1 holds compilation and warm-up: rate starts after
        elif step > self.first[0]:
            rate = (now - self.first[1]) / (step - self.first[0])
            self.eta_at = (rate * (self.total - step), now)
        self.step, self.metrics = step, metrics
        if self.live is not None:
            if "val_loss" in metrics:
                self.console.print(f"step {step}: val_loss [magenta]{metrics['val_loss']:.4f}[/]")
            self.live.refresh()
        else:
            self.console.print(self.line(now))

    def line(self, now: float) -> str:
        """One plain log line (the non-terminal output)."""
        m = self.metrics
        eta = self._eta(now)
        parts = [
            f"[bold]step {self.step:>5}/{self.total}[/]",
            f"loss [cyan]{m['loss']:7.4f}[/]",
            f"grad_norm {m.get('grad_norm', 0.0):7.3f}",
            f"lr {m.get('lr', 0.0):.2e}",
            f"tok/s {m.get('tokens_per_second', 0.0):9,.0f}",
            f"step {m.get('step_time', 0.0) * 1000:7.1f} ms (data {m.get('data_time', 0.0) * 1000:.1f})",
            f"MFU {_mfu(m)}",
            f"mem {_memory(m)}",
            f"elapsed {_clock(now - self.start)}",
            f"ETA {_clock(eta) if eta is not None else '?'}",
        ]
        if "val_loss" in m:
            parts.append(f"val_loss [magenta]{m['val_loss']:7.4f}[/]")
        return "  ".join(parts)

    def __rich__(self) -> Any:
        """The live panel, re-rendered at every refresh so elapsed/ETA keep ticking."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = time.monotonic()
        m = self.metrics
        eta = self._eta(now)
        grid = Table.grid(padding=(0, 2))
        grid.add_row(
            f"[bold]step {self.step}/{self.total}[/]",
            ProgressBar(total=self.total, completed=self.step, width=30),
            f"elapsed {_clock(now - self.start)}",
            f"ETA {_clock(eta) if eta is not None else '?'}",
        )
        if m:
            grid.add_row(
                f"loss [cyan]{m['loss']:.4f}[/]",
                f"tok/s {m.get('tokens_per_second', 0.0):,.0f}  MFU {_mfu(m)}",
                f"mem {_memory(m)}",
                f"lr {m.get('lr', 0.0):.2e}",
            )
        return grid

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


@hookimpl
def titan_train_start(trainer: Any) -> None:
    global _display
    if trainer.parallel.is_main:
        _display = _Display(trainer.config.training.steps, live=wants_live())


@hookimpl
def titan_log_metrics(step: int, metrics: dict[str, Any], config: Any) -> None:
    global _display
    if _display is None:  # a caller that logs without train_start
        _display = _Display(config.training.steps, live=False)
    _display.update(step, metrics)


@hookimpl
def titan_train_end(trainer: Any) -> None:
    global _display
    if _display is not None:
        _display.close()
        _display = None
    if trainer.parallel.is_main and trainer.first_loss is not None:
        first, last = trainer.first_step, trainer.step
        resumed = f", resumed from step {first - 1}" if first > 1 else ""
        _stderr_console().print(
            f"[bold green]done[/]: loss {trainer.first_loss:.4f} (first, step {first}{resumed}) "
            f"-> {trainer.last_loss:.4f} (last, step {last}); "
            f"metrics in {trainer.dump_folder}/metrics.jsonl"
        )
