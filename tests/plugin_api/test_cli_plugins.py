"""What a plugin author sees on the command line: listings, errors, inactive plugins.

Third-party plugins are installed for these commands only, with ``titan_runner``'s
``add_plugin`` (a module plus a ``*.dist-info`` on ``PYTHONPATH``, as pip would leave).
"""

from __future__ import annotations

import re

from titan.core.testing import TitanRunner

THIRD_PARTY = '''
"""shop: a third party's model family, a flavor for llama3, and a backend."""
from titan.core import hookimpl


class EchoBackend:
    name = "echo"
    description = "prints what it would launch"

    def launch(self, job, dry_run):
        print("echo", job.dump_folder)
        return 0


@hookimpl(trylast=True)  # after the llama plugin registered the llama3 family
def titan_register_models(registry):
    from titan.core.registry import ModelFamily
    from titan.models.llama.args import LlamaArgs

    tiny = LlamaArgs(dim=64, n_layers=2, n_heads=4, vocab_size=2048, max_seq_len=128)
    registry.add_family(ModelFamily("shopllama", {"tiny": tiny}, "titan.models.llama.model:build_llama"))
    registry.add_flavor("llama3", "shop-tiny", tiny)


@hookimpl
def titan_register_backends(registry):
    registry.add(EchoBackend())
'''

MISSPELLED = '''
"""oops: a plugin with a misspelled hook."""
from titan.core import hookimpl


@hookimpl
def titan_step_ned(trainer, step, metrics):
    pass
'''


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_plugins_list_reads_well_at_80_columns(titan_runner: TitanRunner) -> None:
    titan_runner.env["COLUMNS"] = "80"
    titan_runner.add_plugin("shop", THIRD_PARTY, distribution="titan-shop-extensions")
    shown = titan_runner.titan("plugins", "list", "--plugins=csvlog").assert_ok().stdout
    assert all(len(line.rstrip()) <= 80 for line in shown.splitlines()), shown
    words = set(re.findall(r"[\w.\-]+", shown))
    # Long names stay whole: no "distributio n", "titan-optim s", "apply_activ ation".
    for whole in (
        "titan-example-csvlog",
        "titan-shop-extensions",
        "titan-optims",
        "apply_activation_checkpointing",
        "register_models",
    ):
        assert whole in words, whole
    header = next(line for line in shown.splitlines() if line.startswith("csvlog "))
    assert header.split() == ["csvlog", "yes", "titan-example-csvlog", "0.1.0"]
    header = next(line for line in shown.splitlines() if line.startswith("shop "))
    assert header.split() == ["shop", "opt-in", "titan-shop-extensions", "0.0.0"]


def test_third_party_models_and_backends_are_listed(titan_runner: TitanRunner) -> None:
    titan_runner.add_plugin("shop", THIRD_PARTY, distribution="titan-shop-extensions")
    models = titan_runner.titan("models", "list").assert_ok().stdout
    assert re.search(r"shopllama\s+tiny\s.*\sshop\s*$", models, re.M), models
    assert re.search(r"llama3\s+shop-tiny\s.*\sshop\s*$", models, re.M), models
    assert re.search(r"llama3\s+8B\s.*\sllama\s*$", models, re.M), models
    backends = titan_runner.titan("backends", "list").assert_ok().stdout
    assert re.search(r"echo\s.*shop\s.*titan-shop-extensions 0\.0\.0", backends), backends
    assert re.search(r"local\s.*local\s.*titan-backends", backends), backends


def test_config_show_keeps_keys_of_an_inactive_plugin(titan_runner: TitanRunner) -> None:
    shown = titan_runner.titan("config", "show", "--csvlog.file=steps.csv").assert_ok().stdout
    assert '[csvlog]\nfile = "steps.csv"\n' in shown  # csvlog is not active, its key stays
    assert "[zloss]" not in titan_runner.titan("config", "show").assert_ok().stdout


def test_broken_plugin_warns_once_and_only_stops_runs_that_use_it(
    titan_runner: TitanRunner,
) -> None:
    titan_runner.add_plugin("oops", MISSPELLED, distribution="titan-oops", version="1.2.3")
    ok = titan_runner.run("--training.steps=1").assert_ok()
    warnings = [line for line in _lines(ok.stderr) if "oops" in line]
    assert len(warnings) == 1, ok.stderr
    assert "plugin 'oops' (distribution titan-oops 1.2.3)" in warnings[0]
    assert "titan_step_ned is not a titan hook (did you mean titan_step_end?)" in warnings[0]

    blocked = titan_runner.run("--training.steps=1", "--plugins=no:oops", "--dry-run")
    assert blocked.assert_ok() and "Traceback" not in blocked.stderr

    used = titan_runner.run("--plugins=oops")
    assert used.returncode == 2 and "Traceback" not in used.stderr
    error = [line for line in _lines(used.stderr) if line.startswith("error:")]
    assert len(error) == 1 and "did you mean titan_step_end?" in error[0], used.stderr
    assert "uninstall titan-oops" in error[0]
    assert not (used.dump_folder / "metrics.jsonl").exists()

    listed = titan_runner.titan("plugins", "list").assert_ok()
    assert re.search(r"oops\s.*broken", listed.stdout), listed.stdout
