"""titan's pytest helper is opt-in, like pytest's ``pytester``.

Installing titan must not change anybody's pytest sessions: a project that installs
titan and does not ask for the helper gets no ``titan_runner`` fixture, and a project
that asks, with
``pytest_plugins = ["titan.core.testing"]`` in its rootdir's conftest.py or with
``-p titan.core.testing``, gets it. Each case is a real pytest session in a
subprocess, in a throw-away project outside this repository (so neither this
repository's conftest.py nor its pyproject.toml reaches it), with pytest's usual
entry-point plugin autoloading on: exactly what a user's project sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

USES_THE_FIXTURE = """
from titan.core.testing import TitanRunner


def test_gets_a_runner_in_its_own_folder(titan_runner, tmp_path):
    assert isinstance(titan_runner, TitanRunner)
    assert titan_runner.path == tmp_path
"""


def _pytest_in_project(project: Path, *args: str, conftest: str | None = None) -> str:
    """Run pytest on a one-test project that requests ``titan_runner``; its output."""
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")  # this folder is the rootdir
    (project / "test_plugin.py").write_text(USES_THE_FIXTURE)
    if conftest is not None:
        (project / "conftest.py").write_text(conftest)
    env = {
        k: v
        for k, v in os.environ.items()
        # what the outer session or the CI may set must not opt the inner one in or out
        if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_titan_registers_no_pytest_plugin_entry_point() -> None:
    """The cause, read from the installed metadata: no ``pytest11`` entry point of titan's."""
    ours = [ep for ep in entry_points(group="pytest11") if ep.value.startswith("titan")]
    assert ours == []


def test_a_project_that_does_not_opt_in_sees_no_titan_fixture(tmp_path: Path) -> None:
    output = _pytest_in_project(tmp_path / "project")
    assert "fixture 'titan_runner' not found" in output, output
    assert "1 error" in output, output


@pytest.mark.parametrize(
    ("args", "conftest"),
    [
        pytest.param(("-p", "titan.core.testing"), None, id="-p"),
        pytest.param((), 'pytest_plugins = ["titan.core.testing"]\n', id="conftest"),
    ],
)
def test_a_project_that_opts_in_gets_titan_runner(
    tmp_path: Path, args: tuple[str, ...], conftest: str | None
) -> None:
    output = _pytest_in_project(tmp_path / "project", *args, conftest=conftest)
    assert output.startswith("exit 0\n") and "1 passed" in output, output
