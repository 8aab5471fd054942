"""The `titan` command as a user runs it: a subprocess, exit codes, no tracebacks.

Mistakes a user makes (exit 2, one line, nothing written) are the table of
test_bad_input.py; the parameter counts `titan models list` shows are checked
against the released checkpoints in tests/models/test_llama_flavors.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import imported_by  # tests/ is on sys.path (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
TITAN = [sys.executable, "-m", "titan.core.cli"]


def titan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*TITAN, *args], capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600
    )


def test_run_trains_and_writes_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = titan(
        "run",
        "--training.steps=4",
        "--training.seq_len=64",
        "--training.local_batch_size=2",
        "--metrics.log_freq=2",
        f"--job.dump_folder={out}",
        "--plugins",
        "csvlog",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 4]
    for record in records:
        assert {"loss", "grad_norm", "lr", "tokens_per_second", "step_time"} <= set(record)
    assert "loss" in result.stderr and "(first, step 1)" in result.stderr
    assert (out / "metrics.csv").read_text().startswith("step,")  # the third-party plugin ran
    assert (out / "job_config.toml").is_file()


def test_dry_run_launches_nothing(tmp_path: Path) -> None:
    result = titan("run", "--dry-run", f"--job.dump_folder={tmp_path / 'dry'}")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "dry").exists()


def test_version_and_help() -> None:
    version = titan("--version")
    assert version.returncode == 0 and version.stdout.startswith("titan ")
    helped = titan("--help")
    assert helped.returncode == 0
    for command in ("run", "config", "plugins", "models"):
        assert command in helped.stdout


def test_config_show_prints_effective_toml(tmp_path: Path) -> None:
    import tomllib

    result = titan(
        "config", "show", "examples/debug.toml", "--training.steps=9", "--plugins", "compile"
    )
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["training"]["steps"] == 9
    assert shown["plugins"]["enabled"] == ["compile"]
    assert "compile" in shown  # active plugins' sections are shown
    assert "csvlog" not in shown  # inactive ones are not


def test_plugins_list_shows_distribution_version_hooks_state() -> None:
    result = titan("plugins", "list", "--plugins", "csvlog")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "csvlog" in line)
    for needle in ("titan-example-csvlog", "0.1.0", "log_metrics", "yes"):
        assert needle in row


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--help"], "plugins"),
        (["plugins", "list"], "titan-example-csvlog"),
        (["run", "--help"], "--dry-run"),
        (["models", "list"], "405B"),  # parameter counts from the flavors' shapes, not a model
    ],
    ids=["help", "plugins-list", "run-help", "models-list"],
)
def test_cli_does_not_import_torch(args: list[str], shown: str) -> None:
    """The commands that only read configs and plugins answer without torch (seconds saved on
    every call); ``shown`` proves the command did its work rather than leave early."""
    out, modules = imported_by(*args, env={**os.environ, "COLUMNS": "200"})
    assert not modules & {"torch", "torchao", "datasets", "transformers"}, sorted(
        modules & {"torch", "torchao", "datasets", "transformers"}
    )
    assert shown in out, out
