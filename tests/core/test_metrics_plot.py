"""`titan plot` on two real runs: a PNG with both loss curves; bad folders are one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import imported_by  # tests/ is on sys.path (tests/conftest.py)

TITAN = [sys.executable, "-m", "titan.core.cli"]
SMALL = ["--training.seq_len=64", "--training.local_batch_size=2", "--metrics.log_freq=1"]


def titan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TITAN, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    runs = []
    for name, lr in (("baseline", "8e-4"), ("high-lr", "3e-3")):
        dump = tmp_path_factory.mktemp(name)
        result = titan(
            "run", "--training.steps=4", f"--optimizer.lr={lr}", *SMALL, f"--job.dump_folder={dump}"
        )
        assert result.returncode == 0, result.stderr
        runs.append(dump)
    return runs


def test_plot_writes_a_png_with_both_loss_curves(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.png"
    result = titan(
        "plot", *map(str, two_runs), "--out", str(out), "-l", "baseline", "-l", "high-lr"
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000

    from titan.core.builtin.plot import draw

    fig = draw(two_runs, ["baseline", "high-lr"])
    ax_loss = fig.axes[0]
    curves = {line.get_label(): line for line in ax_loss.get_lines()}
    assert set(curves) == {"baseline", "high-lr"}
    for run, label in zip(two_runs, ("baseline", "high-lr"), strict=True):
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert list(curves[label].get_xdata()) == [r["step"] for r in records]
        assert list(curves[label].get_ydata()) == [r["loss"] for r in records]
    assert list(curves["baseline"].get_ydata()) != list(curves["high-lr"].get_ydata())


def test_plot_names_a_folder_without_metrics(tmp_path: Path) -> None:
    result = titan("plot", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no metrics.jsonl" in result.stderr and "job.dump_folder" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_help_loads_neither_matplotlib_nor_rich_help_formatting() -> None:
    out, modules = imported_by("--help")
    assert "plot" in out  # the command is listed ...
    assert not modules & {"matplotlib", "typer.rich_utils"}  # ... without importing what it needs
