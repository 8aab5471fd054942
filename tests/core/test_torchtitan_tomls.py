"""torchtitan's own Llama TOMLs, 2024 to v0.2.2, are read as is; their debug configs train.

The files are torchtitan's, unchanged (tests/config/torchtitan_tomls, BSD-3-Clause).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from titan.core.cli import app
from titan.core.config.eras import detect_era
from titan.core.errors import ConfigError
from titan.core.launch import prepare_job
from titan.core.testing import TitanRunner
from titan.core.train import run_training

REPO = Path(__file__).resolve().parents[2]
TOMLS = REPO / "tests/config/torchtitan_tomls"
RELEASES = (
    "2024-04",
    "2024-08",
    "2024-12-03",
    "2024-12-26",
    "v0.1.0",
    "v0.2.0",
    "v0.2.1",
    "v0.2.2",
)
FILES = sorted(p for r in RELEASES for p in (TOMLS / r).glob("*.toml"))
ERA_NOTE = {
    "2024": "read as a torchtitan 2024 (train_configs/) file",
    "v0.1": "read as a torchtitan v0.1.0 file",
    "v0.2": "read as a torchtitan v0.2.x file",
}
# What the shipped sizes ask for (the tiny CPU runs override the data and shapes).
TINY = [
    "--training.dataset=tinyshakespeare",
    "--model.tokenizer_path=",
    "--model.hf_assets_path=",
    "--training.steps=3",
    "--training.seq_len=64",
    "--training.local_batch_size=2",
    "--metrics.log_freq=1",
]


def era_of(path: Path) -> str:
    return "2024" if path.parent.name.startswith("2024") else path.parent.name[:4]


def config_show(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["config", "show", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_every_release_is_in_the_repo() -> None:
    assert {p.parent.name for p in FILES} == set(RELEASES)
    assert len(FILES) == 40  # 6 + 7 + 7 + 4 (2024) + 4 per release
    assert (TOMLS / "LICENSE").read_text().startswith("BSD 3-Clause License")


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_show_accepts_the_file(path: Path) -> None:
    code, stdout, stderr = config_show(str(path))
    assert code == 0, stderr
    shown = tomllib.loads(stdout)  # the effective config is valid TOML
    raw = tomllib.loads(path.read_text())
    assert ERA_NOTE[era_of(path)] in stderr
    assert shown["model"]["name"] == raw["model"]["name"]
    flavor = raw["model"]["flavor"]
    assert shown["model"]["flavor"] == ("debug" if flavor == "debugmodel" else flavor)
    assert shown["training"]["seq_len"] == raw["training"]["seq_len"]
    assert shown["training"]["steps"] == raw["training"]["steps"]
    assert shown["optimizer"]["lr"] == pytest.approx(raw["optimizer"]["lr"])
    batch = raw["training"].get("local_batch_size", raw["training"].get("batch_size"))
    assert shown["training"]["local_batch_size"] == batch
    warmup = raw.get("lr_scheduler", {}).get("warmup_steps", raw["training"].get("warmup_steps"))
    assert shown["lr_scheduler"]["warmup_steps"] == warmup
    expected_formula = "torchtitan_2024" if era_of(path) == "2024" else "torchtitan"
    assert shown["lr_scheduler"]["formula"] == expected_formula
    assert shown["profiling"]["enable_profiling"] == raw["profiling"]["enable_profiling"]
    assert shown["profiling"]["profile_freq"] == raw["profiling"]["profile_freq"]
    # Every key of the file is either a titan key or reported in a note.
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert notes, stderr


def _flat(raw: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


OPTIMIZATIONS = {"compile", "fp8", "fp8-ag", "ac", "tp"}


def expected_plugins(raw: dict[str, object]) -> set[str]:
    """What torchtitan would switch on for this file, read from its keys (every era's names)."""
    on = set()
    if raw.get("training.compile") is True or raw.get("compile.enable") is True:
        on.add("compile")
    converters = raw.get("model.converters", [])
    if raw.get("float8.enable_float8_linear") is True or "float8" in converters:  # type: ignore[operator]
        on.add("fp8")
    for section in ("float8", "quantize.linear.float8"):
        if raw.get(f"{section}.enable_fsdp_float8_all_gather") is True:
            on.add("fp8-ag")
    if raw.get("activation_checkpoint.mode") in ("full", "selective"):
        on.add("ac")
    tp = raw.get("parallelism.tensor_parallel_degree", raw.get("training.tensor_parallel_degree"))
    if isinstance(tp, int) and tp > 1:
        on.add("tp")
    return on


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_torchtitan_switches_activate_the_plugins(path: Path) -> None:
    raw = _flat(tomllib.loads(path.read_text()))
    job = prepare_job(path, validate=False)
    assert job.plugins.active & OPTIMIZATIONS == expected_plugins(raw)
    c = job.config
    if "compile.components" in raw:
        assert c.compile.model is ("model" in raw["compile.components"])  # type: ignore[operator]
        assert c.compile.loss is ("loss" in raw["compile.components"])  # type: ignore[operator]
    for section in ("float8", "quantize.linear.float8"):
        if f"{section}.precompute_float8_dynamic_scale_for_fsdp" in raw:
            want = raw[f"{section}.precompute_float8_dynamic_scale_for_fsdp"]
            assert c.fp8_ag.precompute_scales is want
    if "activation_checkpoint.mode" in raw:
        assert c.ac.mode == raw["activation_checkpoint.mode"]
    if "lr_scheduler.decay_ratio" in raw:
        assert c.lr_scheduler.decay_ratio == raw["lr_scheduler.decay_ratio"]
    if "lr_scheduler.min_lr_factor" in raw or "lr_scheduler.lr_min" in raw:
        floor = raw.get("lr_scheduler.min_lr_factor", raw.get("lr_scheduler.lr_min"))
        assert c.lr_scheduler.min_lr_factor == floor


def test_era_is_told_by_the_keys() -> None:
    for path in FILES:
        era = detect_era(_flat(tomllib.loads(path.read_text())))
        assert era is not None and ERA_NOTE[era_of(path)].endswith(f"{era.name} file")
    assert detect_era(["training.steps", "lr_scheduler.warmup_steps"]) is None  # titan's own
    assert detect_era(_flat(tomllib.loads((REPO / "examples/debug.toml").read_text()))) is None


def test_titan_file_keeps_the_torchtitan_formula_and_2024_file_can_choose() -> None:
    assert prepare_job(None).config.lr_scheduler.formula == "torchtitan"
    job = prepare_job(
        TOMLS / "2024-12-26/debug_model.toml",
        overrides=[("lr_scheduler.formula", "torchtitan")],
        validate=False,
    )
    assert job.config.lr_scheduler.formula == "torchtitan"


# --- what titan does not have: one line, only when asked for --------------------------------


def test_torchft_file_is_refused_in_one_line(titan_runner: TitanRunner) -> None:
    result = titan_runner.titan(
        "config", "show", str(TOMLS / "refused/v0.2.2_llama3_ft_debug_model.toml")
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "fault_tolerance.enable = true" in lines[0] and "torchft" in lines[0]
    assert "set fault_tolerance.enable = false" in lines[0]


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("parallelism.pipeline_parallel_degree", "2", "titan has no pipeline parallelism"),
        ("experimental.pipeline_parallel_degree", "4", "titan has no pipeline parallelism"),
        ("parallelism.context_parallel_degree", "2", "titan has no context parallelism"),
        ("fault_tolerance.enable", "true", "titan has no torchft integration"),
        ("metrics.enable_wandb", "true", "write a metrics plugin"),
    ],
)
def test_what_titan_lacks_is_refused_when_asked_for(key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        prepare_job(None, overrides=[(key, value)])
    assert "\n" not in str(err.value)
    # ... and accepted, with a note, when it asks for nothing.
    off = "false" if value == "true" else "1"
    job = prepare_job(None, overrides=[(key, off)])
    assert any(key in n and "asks for no" in n for n in job.config.notes)


def test_unknown_converter_and_unknown_nested_table_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.converters' names 'mx'.*known: float8"):
        prepare_job(None, overrides=[("model.converters", '["float8", "mx"]')])
    path = tmp_path / "nested.toml"
    path.write_text("[training.extra]\nsteps = 3\n")
    with pytest.raises(ConfigError, match=r"nested table \[training.extra\]; titan sections"):
        prepare_job(path)


def test_hf_assets_path_supplies_the_tokenizer(tmp_path: Path) -> None:
    assets = tmp_path / "Llama-3.1-8B"
    assets.mkdir()
    bundled = REPO / "packages/core/src/titan/core/assets/tokenizers/tinyshakespeare_bpe.json"
    (assets / "tokenizer.json").write_bytes(bundled.read_bytes())
    (assets / "config.json").write_text("{}")
    job = prepare_job(None, overrides=[("model.hf_assets_path", str(assets))])
    assert job.config.model.tokenizer_path == str(assets)
    from titan.core.tokenizers import load_tokenizer

    tok = load_tokenizer(job.config.model.tokenizer_path)
    assert tok.encode("To be", bos=False, eos=False)


def test_config_aliases_lists_the_torchtitan_keys() -> None:
    result = CliRunner().invoke(app, ["config", "aliases"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for key in (
        "model.converters",
        "quantize.linear.float8.enable_fsdp_float8_all_gather",
        "compile.components",
        "activation_checkpoint.mode",
        "checkpoint.enable",
        "lr_scheduler.lr_min",
        "fault_tolerance.enable",
        "job.print_args",
    ):
        assert key in result.stdout, key


# --- training: each era's debug config, 3 steps on CPU --------------------------------------


@pytest.mark.parametrize("release", ["2024-04", "2024-08", "2024-12-26", "v0.1.0", "v0.2.2"])
def test_debug_config_trains(tmp_path: Path, release: str) -> None:
    from titan.core.config.overrides import parse_overrides
    from titan.core.lr_schedule import lr_factor

    path = TOMLS / release / "debug_model.toml"
    overrides = parse_overrides([*TINY, f"--job.dump_folder={tmp_path}"])
    job = prepare_job(path, overrides=overrides)
    result = run_training(job)
    assert result["steps"] == 3 and math.isfinite(result["last_loss"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # Each step's LR is that era's schedule (warmup 2 in every debug file).
    s = job.config.lr_scheduler
    lr = job.config.optimizer.lr
    for r in records:
        factor = lr_factor(
            r["step"] - 1, 2, 3, s.decay_type, s.min_lr_factor, s.decay_ratio, s.formula
        )
        assert r["lr"] == pytest.approx(lr * factor)
    first = 1 / 3 if release.startswith("2024") else 1 / 2  # (i+1)/(w+1) vs (i+1)/w
    assert records[0]["lr"] == pytest.approx(lr * first)


def test_v02_debug_files_are_the_same() -> None:
    """v0.2.0 and v0.2.1 ship v0.2.2's debug config byte for byte (so v0.2.2's run covers them)."""
    text = (TOMLS / "v0.2.2/debug_model.toml").read_bytes()
    assert (TOMLS / "v0.2.0/debug_model.toml").read_bytes() == text
    assert (TOMLS / "v0.2.1/debug_model.toml").read_bytes() == text


def test_run_checks_torchtitan_paths_before_launching(tmp_path: Path) -> None:
    """The debug files name torchtitan's repo-local tokenizer and data: one line each."""
    path = TOMLS / "v0.2.2/debug_model.toml"
    with pytest.raises(ConfigError, match=r"'./tests/assets/tokenizer' \(model.hf_assets_path\)"):
        prepare_job(path)
    with pytest.raises(ConfigError, match=r"c4_test.*training.dataset_path.*tinyshakespeare"):
        prepare_job(path, overrides=[("model.hf_assets_path", "")])
    (tmp_path / "c4_test").mkdir()
    job = prepare_job(
        path,
        overrides=[("model.hf_assets_path", ""), ("training.dataset_path", str(tmp_path))],
    )
    assert job.config.training.dataset == "c4_test"


@pytest.mark.parametrize(
    "name", ["2024-04/llama2_70b.toml", "2024-12-26/llama3_405b.toml", "v0.2.2/llama3_405b.toml"]
)
def test_effective_config_reads_back_the_same(tmp_path: Path, name: str) -> None:
    """Ranks read the job_config.toml titan writes: same values, no era guessing left."""
    job = prepare_job(TOMLS / name, validate=False)
    written = tmp_path / "job_config.toml"
    written.write_text(job.effective_toml())
    assert detect_era(_flat(tomllib.loads(written.read_text()))) is None
    again = prepare_job(written, validate=False)
    assert again.config.to_dict() == job.config.to_dict()
    assert again.plugins.active == job.plugins.active
