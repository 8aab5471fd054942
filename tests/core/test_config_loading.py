"""Config: TOML + overrides -> typed sections; typos and wrong types are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from titan.core.config.job import parse_overrides
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
