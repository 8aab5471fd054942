"""How far a job got: step, loss, tokens/s and ETA, from what the run itself wrote.

Every titan run appends one JSON object per logged step to
``<dump_folder>/metrics.jsonl`` (:mod:`titan.core.builtin.jsonl_metrics`: keys
``step``, ``loss``, ``tokens_per_second`` (per device), ``step_time`` (mean
seconds per step since the previous row), ``elapsed`` (seconds since the run
started) ...) and its effective config to ``<dump_folder>/job_config.toml``
(``[training] steps``). ``titan jobs`` reads both where the dump folder is
readable from here (Slurm's shared file system); a backend whose runs write
elsewhere gives ``progress(record)`` itself (SageMaker, from the job's logs),
and may build the answer with :func:`progress_from_rows`.

Only the tail of a large metrics file is read. Torch-free.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"  # titan.core.builtin.jsonl_metrics.FILE_NAME
CONFIG_FILES = ("job_config.next.toml", "job_config.toml")  # titan.core.launch's names
TAIL_BYTES = 64 * 1024
"""How much of the end of ``metrics.jsonl`` is read (a few hundred rows)."""


@dataclass(frozen=True)
class Progress:
    """Where a job stands, as of its last logged step."""

    step: int
    """The last logged step."""
    total_steps: int | None = None
    """``training.steps`` of the job (None when its config cannot be read)."""
    loss: float | None = None
    """The loss at ``step`` (may be nan)."""
    tokens_per_second: float | None = None
    """Tokens per second per device at ``step``."""
    eta_seconds: float | None = None
    """Seconds left to ``total_steps`` at the rate of the last logged steps, as of ``step``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # the writer stores nan/inf as strings (JSON has none)
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _last_run(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the newest run: a resumed run appends rows whose step or elapsed restart."""
    start = 0
    for i in range(1, len(rows)):
        prev, row = rows[i - 1], rows[i]
        prev_el, el = _number(prev.get("elapsed")), _number(row.get("elapsed"))
        if row["step"] <= prev["step"] or (prev_el is not None and el is not None and el < prev_el):
            start = i
    return rows[start:]


def _seconds_per_step(run: list[Mapping[str, Any]]) -> float | None:
    """From ``elapsed`` between the first and last row of the run (the first row holds the
    warm-up, as the live display's ETA excludes it), else the rows' ``step_time``."""
    first, last = run[0], run[-1]
    el0, el1 = _number(first.get("elapsed")), _number(last.get("elapsed"))
    if len(run) > 1 and el0 is not None and el1 is not None and el1 > el0:
        return (el1 - el0) / (last["step"] - first["step"])
    times = [t for r in run[1:] or run if (t := _number(r.get("step_time"))) is not None]
    return sum(times) / len(times) if times else None


def progress_from_rows(
    rows: Iterable[Mapping[str, Any]], total_steps: int | None = None
) -> Progress | None:
    """Progress from metrics rows (dicts as in ``metrics.jsonl``), oldest first; None if none.

    Rows without an integer ``step`` are ignored. ``total_steps`` is the job's
    ``training.steps``; without it there is no ETA.
    """
    good = [r for r in rows if isinstance(r.get("step"), int) and not isinstance(r["step"], bool)]
    if not good:
        return None
    run = _last_run(good)
    last = run[-1]
    losses = [r for r in run if _number(r.get("loss")) is not None]
    eta = None
    if total_steps is not None:
        rate = _seconds_per_step(run)
        if rate is not None:
            eta = max(0.0, rate * (total_steps - last["step"]))
    return Progress(
        step=last["step"],
        total_steps=total_steps,
        loss=_number(losses[-1].get("loss")) if losses else None,
        tokens_per_second=_number(last.get("tokens_per_second")),
        eta_seconds=eta,
    )


def tail_rows(path: Path, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The JSON objects on the last ``max_bytes`` of a JSON-lines file, oldest first.

    A line cut by the start of the window, or still being written, is skipped.
    """
    with path.open("rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - max_bytes)
        f.seek(start)
        data = f.read()
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # starts mid-line
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def total_steps_of(dump_folder: Path) -> int | None:
    """``training.steps`` of the newest config titan wrote into ``dump_folder`` (None if none)."""
    configs = [p for p in (dump_folder / n for n in CONFIG_FILES) if p.is_file()]
    for path in sorted(configs, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            steps = tomllib.loads(path.read_text()).get("training", {}).get("steps")
        except (OSError, ValueError):
            continue
        if isinstance(steps, int) and not isinstance(steps, bool):
            return steps
    return None


def progress_from_dump_folder(dump_folder: Path) -> Progress | None:
    """The progress of the run writing into ``dump_folder``; None when it has logged nothing."""
    dump_folder = Path(dump_folder)
    path = dump_folder / METRICS_FILE
    if not path.is_file():
        return None
    return progress_from_rows(tail_rows(path), total_steps_of(dump_folder))
