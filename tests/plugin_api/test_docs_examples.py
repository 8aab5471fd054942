"""The plugin examples of docs/plugins.md work as written.

Every Python block there that is a whole plugin module (it starts with a module
docstring ``name: ...``) is installed with ``titan_runner.add_plugin`` under that name; then
they are listed, used from the command line, and trained with together.
"""

from __future__ import annotations

import re
from pathlib import Path

from titan.core.testing import TitanRunner

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
INSTALLED = {"zloss", "csvlog", "sgd", "mirror"}  # the doc shows the installed examples' code too


def doc_plugins() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    found = {}
    for block in blocks:
        m = re.match(r'\A"{3}([\w-]+): ', block)
        if m and m.group(1) not in INSTALLED:
            found[m.group(1)] = block
    return found


def test_every_documented_hook_family_has_a_working_example(titan_runner: TitanRunner) -> None:
    plugins = doc_plugins()
    assert {"norm-eps", "gc-every", "smooth", "ema", "spikes", "hello", "tinyllama", "echo"} <= set(
        plugins
    ), sorted(plugins)
    for name, source in plugins.items():
        titan_runner.add_plugin(name, source)

    listed = titan_runner.titan("plugins", "list").assert_ok()
    assert "broken" not in listed.output, listed.output
    assert titan_runner.titan("hello", "world").assert_ok().stdout == "hello world\n"
    models = titan_runner.titan("models", "list").assert_ok().stdout
    assert re.search(r"llama3\s+tiny\s", models) and re.search(r"tinyllama\s+2L\s", models)
    assert "echo" in titan_runner.titan("backends", "list").assert_ok().stdout
    echoed = titan_runner.run("--backend=echo").assert_ok()
    assert "titan.core.train" in echoed.stdout and (echoed.dump_folder / "job_config.toml").exists()

    trained = titan_runner.run(
        "--plugins=norm-eps,gc-every,smooth,ema,spikes",
        "--model.name=tinyllama",
        "--model.flavor=2L",
        "--gc.every=2",
        "--checkpoint.enable_checkpoint=true",
    ).assert_ok()
    assert set(trained.metric("grad_spikes")) == {1, 2, 3, 4}
    assert set(trained.checkpoint_state(4, "ema")) >= {"shadow.output.weight"}
