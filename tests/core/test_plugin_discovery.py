"""Plugins come through the `titan.plugins` entry-point group, ours and third parties' alike."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from titan.core import hookimpl, plugins
from titan.core.errors import PluginError
from titan.core.plugins import load_plugins


def test_installed_third_party_distribution_is_discovered() -> None:
    """examples/plugins/titan-csvlog is installed in the dev environment like any package."""
    host = load_plugins()
    info = host.infos["csvlog"]
    assert info.distribution == "titan-example-csvlog"
    assert info.version == "0.1.0"
    assert info.module == "titan_csvlog.plugin"
    assert set(info.hooks) == {"titan_config_sections", "titan_log_metrics"}
    assert not info.autoload


def test_our_own_plugins_use_the_same_door() -> None:
    host = load_plugins()
    assert host.infos["compile"].distribution == "titan-optims"
    assert host.infos["llama"].distribution == "titan-models"
    assert host.infos["local"].distribution == "titan-backends"
    assert host.infos["jsonl"].autoload and host.infos["jsonl"].distribution == "titan-core"


def test_activation_autoload_opt_in_and_blocking() -> None:
    host = load_plugins()
    active = host.activate([])
    assert "jsonl" in active and "compile" not in active and "csvlog" not in active
    active = host.activate(["csvlog", "no:tensorboard"])
    assert "csvlog" in active and "tensorboard" not in active


def test_inactive_plugins_do_not_receive_runtime_hooks(tmp_path) -> None:
    host = load_plugins()
    host.activate([])
    config = types.SimpleNamespace(
        job=types.SimpleNamespace(dump_folder=str(tmp_path)),
        csvlog=types.SimpleNamespace(file="m.csv"),
        metrics=types.SimpleNamespace(enable_tensorboard=False),
        training=types.SimpleNamespace(steps=1),
    )
    host.hook.titan_log_metrics(step=1, metrics={"loss": 1.0}, config=config)
    assert (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "m.csv").exists()
    host.activate(["csvlog"])
    host.hook.titan_log_metrics(step=2, metrics={"loss": 0.5}, config=config)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "step,loss"


def test_unknown_plugin_name() -> None:
    host = load_plugins()
    with pytest.raises(PluginError, match=r"unknown plugin 'nope'.*available plugins: .*compile"):
        host.activate(["nope"])


def test_requested_and_blocked_is_an_error() -> None:
    host = load_plugins()
    with pytest.raises(PluginError, match="both requested and blocked"):
        host.activate(["csvlog", "no:csvlog"])


def _fake_entry_point(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("TITAN_BROKEN_PLUGINS_REPORTED", "")
    real = plugins.entry_points

    def entry_points(group: str):
        eps = list(real(group=group))
        return [*eps, EntryPoint(name="broken", value=module.__name__, group=group)]

    monkeypatch.setattr(plugins, "entry_points", entry_points)


def _broken_message(capsys: pytest.CaptureFixture[str]) -> str:
    """Loading warns once, on one line; activating the plugin fails with the same message."""
    host = load_plugins()
    load_plugins()  # a second load (the CLI loads plugins more than once) does not repeat it
    warned = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("warning: plugin 'broken'"), warned
    assert "broken" in host.infos and not host.infos["broken"].hooks
    assert "broken" not in host.activate([])  # an unused broken plugin stops nothing
    with pytest.raises(PluginError) as err:
        host.activate(["broken"])
    message = str(err.value)
    assert message in warned[0] and "\n" not in message
    return message


def test_hook_with_wrong_arguments_is_rejected_at_registration(monkeypatch, capsys) -> None:
    module = types.ModuleType("titan_test_bad_args")

    @hookimpl
    def titan_log_metrics(step, metrics, config, colour):  # 'colour' is not in the spec
        pass

    module.titan_log_metrics = titan_log_metrics
    _fake_entry_point(monkeypatch, module)
    message = _broken_message(capsys)
    assert "plugin 'broken' (distribution ? ?), module titan_test_bad_args" in message
    assert "titan_log_metrics takes 'colour'" in message
    assert "it passes: step, metrics, config" in message


def test_misspelled_hook_gets_a_suggestion(monkeypatch, capsys) -> None:
    module = types.ModuleType("titan_test_misspelled")

    @hookimpl
    def titan_los_terms(trainer, logits, labels, loss):
        pass

    module.titan_los_terms = titan_los_terms
    _fake_entry_point(monkeypatch, module)
    message = _broken_message(capsys)
    assert "titan_los_terms is not a titan hook (did you mean titan_loss_terms?)" in message
    assert "module titan_test_misspelled" in message


def test_hook_titan_does_not_define_is_rejected(monkeypatch, capsys) -> None:
    module = types.ModuleType("titan_test_unknown_hook")

    @hookimpl
    def titan_on_lunch_break(trainer):
        pass

    module.titan_on_lunch_break = titan_on_lunch_break
    _fake_entry_point(monkeypatch, module)
    assert "titan_on_lunch_break is not a titan hook;" in _broken_message(capsys)


def test_titan_function_without_hookimpl_is_rejected(monkeypatch, capsys) -> None:
    module = types.ModuleType("titan_test_unmarked")

    def titan_step_end(trainer, step, metrics):  # forgot @hookimpl: pluggy would ignore it
        pass

    module.titan_step_end = titan_step_end
    _fake_entry_point(monkeypatch, module)
    assert "titan_step_end is not marked @hookimpl" in _broken_message(capsys)


def test_plugin_that_fails_to_import(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TITAN_BROKEN_PLUGINS_REPORTED", "")
    real = plugins.entry_points
    monkeypatch.setattr(
        plugins,
        "entry_points",
        lambda group: [*real(group=group), EntryPoint("ghost", "titan_no_such_module", group)],
    )
    host = load_plugins()
    assert "plugin 'ghost'" in capsys.readouterr().err
    with pytest.raises(PluginError, match=r"plugin 'ghost'.*failed to import titan_no_such_module"):
        host.activate(["ghost"])


def test_loss_hook_first_answer_wins_and_terms_are_collected(monkeypatch) -> None:
    """titan_loss is firstresult (one tensor, not a list); titan_loss_terms collects all."""
    module = types.ModuleType("titan_test_loss_hooks")

    @hookimpl
    def titan_loss(logits, labels):
        return logits.sum() * 0 + 7.0

    @hookimpl
    def titan_loss_terms(loss):
        return {"double": loss * 2}

    module.titan_loss = titan_loss
    module.titan_loss_terms = titan_loss_terms
    _fake_entry_point(monkeypatch, module)
    import torch

    host = load_plugins()
    assert not host.broken
    host.activate([])
    logits, labels = torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long)
    assert host.hook.titan_loss(trainer=None, logits=logits, labels=labels) is None  # inactive
    host.activate(["broken"])
    assert float(host.hook.titan_loss(trainer=None, logits=logits, labels=labels)) == 7.0
    terms = host.hook.titan_loss_terms(
        trainer=None, logits=logits, labels=labels, loss=torch.tensor(3.0)
    )
    assert [float(t["double"]) for t in terms] == [6.0]


def test_api_version_and_trainer_api_are_published() -> None:
    from titan.core import hookspecs

    major, minor = hookspecs.PLUGIN_API_VERSION
    assert major >= 1 and minor >= 0
    assert {"config", "model", "step", "parallel", "cross_entropy(logits, labels)"} <= set(
        hookspecs.TRAINER_API
    )
