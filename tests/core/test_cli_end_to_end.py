"""The `titan` command as a user runs it: a subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TITAN = [sys.executable, "-m", "titan.core.cli"]


def titan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*TITAN, *args], capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one clear line
    for needle in needles:
        assert needle in lines[0]


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


def test_unknown_plugin_exits_2_with_the_list() -> None:
    assert_user_error(titan("run", "--plugins", "fp9"), "unknown plugin 'fp9'", "available plugins")


def test_unknown_key_exits_2_with_a_suggestion() -> None:
    assert_user_error(titan("run", "--training.stepz=3"), "training.stepz", "training.steps")


def test_wrong_type_exits_2() -> None:
    assert_user_error(titan("run", "--training.steps=ten"), "training.steps", "an integer")


def test_missing_config_file_exits_2() -> None:
    assert_user_error(titan("run", "no_such.toml"), "no_such.toml", "does not exist")


def test_bad_input_keeps_what_was_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert_user_error(titan("run", f"--job.dump_folder={out}", "--model.flavor=huge"), "huge")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


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


def test_models_list_shows_flavors_with_parameter_counts() -> None:
    result = titan("models", "list")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "llama3" in line and " 8B" in line)
    assert "8.03B" in row


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"], ["run", "--help"]])
def test_cli_does_not_import_torch(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from titan.core import cli\n"
        f"sys.argv = ['titan', *{args!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'torchao', 'datasets', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
