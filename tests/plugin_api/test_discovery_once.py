"""``titan run`` scans the ``titan.plugins`` entry points once per process.

The CLI, the launch, the model registry and the trainer each ask for the plugins; before
the scan was shared, one ``titan run`` imported and checked every plugin two or three
times. The count comes from ``titan.core.plugins.DISCOVERIES``, bumped by each scan.
"""

from __future__ import annotations

from pathlib import Path

from titan.core import plugins
from titan.core.testing import titan_in_process


def test_titan_run_discovers_plugins_once(tmp_path: Path) -> None:
    plugins.forget_discovered_plugins()
    before = plugins.DISCOVERIES
    code, out, err = titan_in_process(
        "run", "--training.steps=2", "--metrics.log_freq=1", f"--job.dump_folder={tmp_path}"
    )
    assert code == 0, err
    assert (tmp_path / "metrics.jsonl").read_text().count('"step"') == 2  # it trained
    assert plugins.DISCOVERIES - before == 1


def test_each_host_activates_on_its_own() -> None:
    """Shared registrations, separate activation: one caller's plugins do not leak."""
    first, second = plugins.load_plugins(), plugins.load_plugins()
    assert first.pm is second.pm
    first.activate(["compile"])
    second.activate([])
    assert "compile" in first.active and "compile" not in second.active
