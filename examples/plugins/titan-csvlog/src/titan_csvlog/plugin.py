"""csvlog: writes every logged step's metrics to a CSV file (an example third-party plugin).

It shows the whole extension surface a plugin package needs: an entry point
in the ``titan.plugins`` group (see this package's pyproject.toml), a config
section of its own (``[csvlog] file``), and one hook implementation.
Activate it with ``titan run --plugins csvlog``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from titan.core import hookimpl


@dataclass
class CsvLogConfig:
    file: str = "metrics.csv"
    """Relative to job.dump_folder."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"csvlog": CsvLogConfig}


@hookimpl
def titan_log_metrics(step: int, metrics: dict[str, Any], config: Any) -> None:
    path = Path(config.job.dump_folder) / config.csvlog.file
    fields = ["step", *sorted(k for k in metrics if k != "step")]
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({"step": step, **metrics})
