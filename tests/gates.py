"""Test plugins that hold a run at an exact point until the test has acted: no sleeps, no polls
that can miss the moment.

``save_gate``: the Nth checkpoint save of the run waits *inside the save* (DCP
is collecting the state dicts; ``step-<N>.tmp`` exists, its ``.metadata`` does
not) until the test creates ``<gate>/go`` or kills the run. It marks the
moment with ``<gate>/saving``.

``step_gate``: at the start of step K the run waits until a path exists (e.g.
an async checkpoint that must be published by then), marks ``<gate>/reached``,
then waits for ``<gate>/go``. A run whose path never appears fails after the
deadline with that in its error, so the test reports it instead of hanging.

Installed with :func:`titan.core.testing.install_plugin` into a folder put on
``PYTHONPATH``, so every rank of a run loads them; AUTOLOAD, so the command
line stays the tested one. Imported by tests after putting ``tests/`` on
``sys.path`` (the suite runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from exact_runs import titan_env

from titan.core.testing import install_plugin, pythonpath_with

_WAIT = """
def _wait_for(path, what):
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"test gate: {what} ({path}) never came")
        time.sleep(0.01)
"""

SAVE_GATE = (
    '''
"""Test plugin: the Nth checkpoint save waits, inside the save, until the test says go."""
import os
import time
from pathlib import Path

from titan.core import hookimpl

AUTOLOAD = True
'''
    + _WAIT
    + """

class Gate:
    calls = 0

    def state_dict(self):
        Gate.calls += 1
        if Gate.calls == int(os.environ.get("TITAN_TEST_GATE_AT", "1")):
            folder = Path(os.environ["TITAN_TEST_GATE"])
            (folder / "saving").touch()
            _wait_for(folder / "go", "the go of the test")
        return {}

    def load_state_dict(self, state):
        pass


@hookimpl
def titan_checkpoint_state(trainer):
    return {"save_gate": Gate()}
"""
)

STEP_GATE = (
    '''
"""Test plugin: step K starts once a path exists; then it waits until the test says go."""
import os
import time
from pathlib import Path

from titan.core import hookimpl

AUTOLOAD = True
'''
    + _WAIT
    + """

@hookimpl
def titan_step_start(trainer, step):
    if step != int(os.environ["TITAN_TEST_GATE_AT"]):
        return
    folder = Path(os.environ["TITAN_TEST_GATE"])
    _wait_for(Path(os.environ["TITAN_TEST_GATE_AFTER"]), "the awaited path")
    (folder / "reached").touch()
    _wait_for(folder / "go", "the go of the test")
"""
)


def gated_env(
    tmp_path: Path, source: str, at: int, after: Path | None = None
) -> tuple[dict[str, str], Path]:
    """The environment of a run with the gate plugin ``source`` installed; and the gate folder."""
    site, gate = tmp_path / "gate-site", tmp_path / "gate"
    install_plugin(site, "gate", source)
    gate.mkdir(exist_ok=True)
    env = titan_env(
        PYTHONPATH=pythonpath_with(site), TITAN_TEST_GATE=str(gate), TITAN_TEST_GATE_AT=str(at)
    )
    if after is not None:
        env["TITAN_TEST_GATE_AFTER"] = str(after)
    return env, gate


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``path`` exists (the gated run got there), or fail if the run ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        log = getattr(proc, "log", None)
        assert proc.poll() is None, log.read_text() if log else "the run ended"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
