"""Config: TOML + overrides -> typed sections; typos and wrong types are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from titan.core.config.job import JobConfig
from titan.core.config.overrides import parse_overrides
from titan.core.errors import ConfigError, PluginError
from titan.core.launch import prepare_job

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_debug_job() -> None:
    job = prepare_job(None)
    c = job.config
    assert (c.model.name, c.model.flavor) == ("llama3", "debug")
    assert c.training.steps > 0 and c.training.seq_len == 256
    assert c.training.dataset == "tinyshakespeare"


def test_toml_and_overrides_merge_with_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[training]
steps = 7
seq_len = 64
[optimizer]
lr = 1e-3
""",
    )
    overrides = parse_overrides(
        ["--training.steps=11", "--optimizer.lr", "3e-4", "--metrics.enable_tensorboard"]
    )
    c = prepare_job(path, overrides=overrides).config
    assert c.training.steps == 11  # the override wins over the file
    assert c.training.seq_len == 64  # the file wins over the default
    assert c.optimizer.lr == pytest.approx(3e-4) and isinstance(c.optimizer.lr, float)
    assert c.metrics.enable_tensorboard is True
    assert c.model.flavor == "debug"


def test_string_override_that_looks_like_a_number() -> None:
    c = prepare_job(
        None, overrides=[("model.flavor", "8B"), ("job.description", "42")], validate=False
    ).config
    assert c.model.flavor == "8B"
    assert c.job.description == "42"


def load(*overrides: tuple[str, str]) -> JobConfig:
    return prepare_job(None, overrides=list(overrides), validate=False).config


def test_slurm_time_override_reaches_its_string_key_as_typed() -> None:
    """Issue 22: TOML reads 00:20:00 as a local time; the string key gets the text."""
    assert load(("slurm.time", "00:20:00")).slurm.time == "00:20:00"
    assert load(("slurm.time", "1-00:00:00")).slurm.time == "1-00:00:00"


@pytest.mark.parametrize(
    "typed",
    ["2024-01-01", "2024-01-01T10:00:00", "1.50", "1e3", "0x10", "true", "false", "inf", "[1, 2]"],
)
def test_string_key_gets_the_override_as_typed(typed: str) -> None:
    assert load(("job.description", typed)).job.description == typed


@pytest.mark.parametrize(
    ("typed", "expected"), [('"a b"', "a b"), ("'00:20:00'", "00:20:00"), ('"1.50"', "1.50")]
)
def test_quoted_toml_string_override_gives_its_content(typed: str, expected: str) -> None:
    assert load(("job.description", typed)).job.description == expected


def test_bare_flag_on_a_string_key_is_the_text_true() -> None:
    overrides = parse_overrides(["--job.description"])
    assert prepare_job(None, overrides=overrides, validate=False).config.job.description == "true"


def test_alias_onto_a_string_key_gets_the_text_as_typed() -> None:
    """The target key's type decides: torchtitan's selective_ac_option lands on a str key."""
    c = load(("activation_checkpoint.selective_ac_option", "02"))
    assert c.ac.selective_ac_option == "02"
    assert load(("training.batch_size", "3")).training.local_batch_size == 3  # onto an int key


def test_value_alias_still_renames_a_string_override() -> None:
    assert load(("model.flavor", "debugmodel")).model.flavor == "debug"


def test_non_string_keys_keep_toml_parsing() -> None:
    c = load(
        ("training.steps", "4.0"),
        ("optimizer.lr", "1.50"),
        ("metrics.enable_tensorboard", "true"),
        ("lr_scheduler.decay_ratio", "0.5"),  # float | None
        ("parallelism.init_full_model_on_rank0", "false"),  # bool | Literal["auto"]
        ("data.weights", "1,2.5"),
    )
    assert c.training.steps == 4 and isinstance(c.training.steps, int)
    assert c.optimizer.lr == 1.5
    assert c.metrics.enable_tensorboard is True
    assert c.lr_scheduler.decay_ratio == 0.5
    assert c.parallelism.init_full_model_on_rank0 is False
    assert c.data.weights == [1.0, 2.5]
    assert (
        load(("parallelism.init_full_model_on_rank0", "auto")).parallelism.init_full_model_on_rank0
        == "auto"
    )


def test_string_list_items_are_as_typed() -> None:
    assert load(("data.sources", "a, 1.50 ,00:20:00")).data.sources == ["a", "1.50", "00:20:00"]
    assert load(("data.sources", '"a,b"')).data.sources == ["a", "b"]
    assert load(("data.sources", '["x", "y"]')).data.sources == ["x", "y"]
    assert load(("slurm.sbatch", "--time=00:20:00")).slurm.sbatch == ["--time=00:20:00"]


@pytest.mark.parametrize(
    ("typed", "shown"),
    [("00:20:00", "got 00:20:00 (time)"), ("2024-01-01", "got 2024-01-01 (date)")],
)
def test_time_or_date_override_for_an_int_key_is_still_refused(typed: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(("training.steps", typed))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == f"config key 'training.steps' expects an integer, {shown}"


def test_toml_time_and_date_for_a_string_key_are_their_iso_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[slurm]\ntime = 00:20:00\nsbatch = [00:30:00]\n[job]\ndescription = 2024-01-01\n",
    )
    c = prepare_job(path, validate=False).config
    assert c.slurm.time == "00:20:00"
    assert c.slurm.sbatch == ["00:30:00"]
    assert c.job.description == "2024-01-01"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("00:20:00", "got 00:20:00 (time)"), ("2024-01-01", "got 2024-01-01 (date)")],
)
def test_toml_time_or_date_for_an_int_key_is_still_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    path = write(tmp_path, f"[training]\nsteps = {value}\n")
    with pytest.raises(ConfigError) as err:
        prepare_job(path, validate=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.endswith(f"config key 'training.steps' expects an integer, {shown}")


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "[training]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'training.stepz'.*training.steps"):
        prepare_job(path)


def test_unknown_key_in_the_wrong_section_points_to_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"'training.lr'.*optimizer.lr"):
        prepare_job(None, overrides=[("training.lr", "0.1")])


def test_unknown_section_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "[trainig]\nsteps = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[trainig\].*\[training\]"):
        prepare_job(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("training.steps", "many", "an integer"),
        ("training.steps", "2.5", "an integer"),
        ("metrics.enable_tensorboard", "yes", "true or false"),
        ("optimizer.lr", "fast", "a number"),
        ("lr_scheduler.decay_type", "exponential", "one of 'linear', 'cosine', 'none'"),
    ],
)
def test_wrong_type_names_key_type_and_value(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_job(None, overrides=[(key, value)])
    msg = str(err.value)
    assert f"'{key}'" in msg and expected in msg and value in msg


def test_wrong_type_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[training]\nsteps = "ten"\n')
    with pytest.raises(ConfigError, match=r"'training.steps' expects an integer, got 'ten'"):
        prepare_job(path)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        prepare_job(write(tmp_path, "[training\nsteps = 1"))
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_job(tmp_path / "nope.toml")


def test_semantic_validation_before_launch() -> None:
    with pytest.raises(ConfigError, match="training.steps' must be positive"):
        prepare_job(None, overrides=[("training.steps", "0")])
    with pytest.raises(ConfigError, match=r"unknown flavor.*'9B'"):
        prepare_job(None, overrides=[("model.flavor", "9B")])
    with pytest.raises(ConfigError, match=r"unknown model 'llama4'"):
        prepare_job(None, overrides=[("model.name", "llama4")])


def test_torchtitan_toml_is_accepted_and_mapped() -> None:
    """The keys of torchtitan's published Llama 3 8B setup map onto titan's sections and plugins."""
    job = prepare_job(REPO / "examples/torchtitan_llama3_8b.toml", validate=False)
    c = job.config
    assert c.training.local_batch_size == 1  # training.batch_size
    assert c.training.seq_len == 8192 and c.training.steps == 3000
    assert c.training.max_norm == 1.0
    assert (c.model.name, c.model.flavor) == ("llama3", "8B")
    assert c.optimizer.lr == pytest.approx(3e-4)
    assert c.lr_scheduler.warmup_steps == 200
    assert c.metrics.enable_tensorboard is True and c.metrics.save_tb_folder == "tb"
    assert c.checkpoint.enable_checkpoint is True and c.checkpoint.interval == 500
    assert {"compile", "fp8", "fp8-ag"} <= job.plugins.active
    assert c.fp8_ag.precompute_scales is True


def test_torchtitan_keys_work_as_overrides() -> None:
    job = prepare_job(
        None,
        overrides=[("training.compile", "true"), ("training.batch_size", "3")],
    )
    assert "compile" in job.plugins.active
    assert job.config.training.local_batch_size == 3
    assert any("training.compile" in n for n in job.config.notes)


def test_torchtitan_false_flag_does_not_activate() -> None:
    job = prepare_job(None, overrides=[("training.compile", "false")])
    assert "compile" not in job.plugins.active


def test_unsupported_torchtitan_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="pipeline_parallel_degree.*not support"):
        prepare_job(None, overrides=[("parallelism.pipeline_parallel_degree", "4")])


def test_plugins_enabled_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugins]\nenabled = ["compile"]\n')
    assert "compile" in prepare_job(path).plugins.active


def test_unknown_plugin_lists_the_available_ones() -> None:
    with pytest.raises(PluginError) as err:
        prepare_job(None, plugins=["compil"])
    msg = str(err.value)
    assert "unknown plugin 'compil'" in msg and "did you mean 'compile'" in msg
    assert "available plugins:" in msg and "csvlog" in msg


def test_effective_config_round_trips(tmp_path: Path) -> None:
    """The TOML written for the ranks loads back into the same config and plugins."""
    job = prepare_job(
        None,
        plugins=["compile"],
        overrides=[("training.steps", "5"), ("compile.mode", "max-autotune")],
    )
    path = tmp_path / "job_config.toml"
    path.write_text(job.effective_toml())
    again = prepare_job(path)
    assert again.config.to_dict() == job.config.to_dict()
    assert again.plugins.active == job.plugins.active


def test_tensor_parallel_degree_with_its_plugin_blocked_is_refused() -> None:
    with pytest.raises(PluginError, match=r"tensor_parallel_degree is 2 but plugin 'tp'.*blocked"):
        prepare_job(
            None, plugins=["no:tp"], overrides=[("parallelism.tensor_parallel_degree", "2")]
        )
