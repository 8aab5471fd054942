"""Appends one JSON object per logged step to <dump_folder>/metrics.jsonl, for scripts and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from titan.core import hookimpl

AUTOLOAD = True
FILE_NAME = "metrics.jsonl"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


@hookimpl
def titan_log_metrics(step: int, metrics: dict[str, Any], config: Any) -> None:
    path = Path(config.job.dump_folder) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"step": step, **{k: _plain(v) for k, v in metrics.items() if k != "step"}}
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
