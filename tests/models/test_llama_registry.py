"""A third party adds a model family or a flavor through the plugin hooks, touching no titan file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

from titan.core import PROJECT_NAME, hookimpl, hookspecs
from titan.core.errors import ConfigError, PluginError
from titan.core.registry import ModelFamily, ModelRegistry
from titan.models import plugin as llama_plugin
from titan.models.llama.args import LLAMA3_FLAVORS, LlamaArgs

REPO = Path(__file__).resolve().parents[2]

# Llama 3.2 1B's published hyper-parameters (its embeddings are tied; titan's are not).
LLAMA32_1B = LlamaArgs(
    dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim_multiplier=1.5, multiple_of=256
)

THIRD_PARTY = '''
"""titan-nano: a third-party model package (a new family and a new Llama 3 flavor)."""

from titan.core import hookimpl
from titan.core.registry import ModelFamily
from titan.models.llama.args import LlamaArgs

AUTOLOAD = True

NANO = LlamaArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=2048, multiple_of=64,
                 max_seq_len=256)


def build(args):
    """The family's own builder; any nn.Module with init_weights(buffer_device) works."""
    from titan.models.llama.model import build_llama

    return build_llama(args)


@hookimpl(trylast=True)  # after titan's families exist, so a flavor can join llama3
def titan_register_models(registry):
    registry.add_family(ModelFamily("nano", {"tiny": NANO}, "titan_nano.plugin:build", "3rd party"))
    registry.add_flavor(
        "llama3",
        "1B",
        LlamaArgs(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim_multiplier=1.5,
                  multiple_of=256),
    )
'''


class ThirdParty:
    """An in-test plugin object, registered with pluggy like an installed one."""

    @hookimpl(trylast=True)
    def titan_register_models(self, registry: ModelRegistry) -> None:
        registry.add_flavor("llama3", "1B", LLAMA32_1B)
        registry.add_family(
            ModelFamily(
                "tiny", {"t": LLAMA3_FLAVORS["debug"]}, "titan.models.llama.model:build_llama"
            )
        )


def registry_with(*plugins: object) -> ModelRegistry:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(llama_plugin, name="llama")
    for i, p in enumerate(plugins):
        pm.register(p, name=f"third-{i}")  # registered last = called first, without trylast
    registry = ModelRegistry()
    pm.hook.titan_register_models(registry=registry)
    return registry


def test_pluggy_registered_flavor_and_family() -> None:
    from titan.core.model_info import count_parameters

    registry = registry_with(ThirdParty())
    fam = registry.get("llama3")
    assert fam.flavor("1B") is LLAMA32_1B and "8B" in fam.flavors
    assert f"{count_parameters(fam, LLAMA32_1B) / 1e9:.2f}" == "1.50"  # 1.24B once tied
    assert registry.get("tiny").flavor("t") == LLAMA3_FLAVORS["debug"]


def test_adding_to_a_missing_family_says_how_to_fix() -> None:
    class Early:
        @hookimpl  # no trylast: runs before the llama plugin registered its families
        def titan_register_models(self, registry: ModelRegistry) -> None:
            registry.add_flavor("llama3", "1B", LLAMA32_1B)

    with pytest.raises(PluginError, match=r"trylast=True"):
        registry_with(Early())
    with pytest.raises(PluginError, match="registered twice"):
        registry_with(ThirdParty(), ThirdParty())


def test_flavor_may_be_an_args_file(tmp_path: Path) -> None:
    registry = registry_with()
    path = tmp_path / "titan_model.json"
    path.write_text(json.dumps({"args": LLAMA32_1B.to_dict()}))
    assert registry.get("llama3").flavor(str(path)) == LLAMA32_1B
    with pytest.raises(ConfigError, match="does not exist"):
        registry.get("llama3").flavor(str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"args": {"dim": 64, "n_layerz": 2}}))
    with pytest.raises(ConfigError, match="n_layerz"):
        registry.get("llama3").flavor(str(path))
    with pytest.raises(ConfigError, match="did you mean '8B'"):
        registry.get("llama3").flavor("8b")


def test_installed_third_party_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path (dist-info + entry point): listed, and it trains."""
    site = tmp_path / "site"
    (site / "titan_nano").mkdir(parents=True)
    (site / "titan_nano" / "__init__.py").write_text("")
    (site / "titan_nano" / "plugin.py").write_text(textwrap.dedent(THIRD_PARTY))
    info = site / "titan_nano-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: titan-nano\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[titan.plugins]\nnano = titan_nano.plugin\n")
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}

    def titan(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "titan.core.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)

    listed = titan("models", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {tuple(line.split()[:2]) for line in listed.stdout.splitlines() if len(line.split()) > 2}
    rows = {(a.strip(), b.strip()) for a, b in rows}
    assert {("nano", "tiny"), ("llama3", "1B"), ("llama3", "8B")} <= rows

    # Training in this process (the imports are already paid for) with the package on sys.path.
    from titan.core.launch import prepare_job
    from titan.core.plugins import forget_discovered_plugins
    from titan.core.train import run_training

    monkeypatch.syspath_prepend(str(site))
    forget_discovered_plugins()  # plugins are discovered once per process: scan again
    out = tmp_path / "run"
    overrides = {
        "model.name": "nano",
        "model.flavor": "tiny",
        "training.steps": "1",
        "training.seq_len": "32",
        "training.local_batch_size": "2",
        "job.dump_folder": str(out),
    }
    try:
        job = prepare_job(None, overrides=list(overrides.items()))
        assert "nano" in job.plugins.active
        assert run_training(job)["steps"] == 1
    finally:
        forget_discovered_plugins()  # the package leaves sys.path: later tests must not see it
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
