"""Running the ``titan`` command in a fresh interpreter, as a user does, and reading the result.

Shared by every test that needs a real process rather than ``titan_in_process``: the
backends' tests (their own environment: moto's address, a Slurm config), the one-line
refusal checks, and the import probes that prove a command keeps torch or the SageMaker
SDK out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def titan_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """``titan ARGS`` in a subprocess (``python -m titan.core.cli``), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        cwd=cwd,
    )


def one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one line of a refusal: exit 2, no traceback, one non-empty line holding ``needles``."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


IMPORTED = "IMPORTED-MODULES "


def imported_by(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> tuple[str, set[str]]:
    """Run ``titan ARGS`` in a fresh interpreter: (its stdout, every module it imported).

    The command must succeed. Its own output comes first; the probe's line is stripped.
    """
    code = (
        "import json, sys\n"
        "from titan.core import cli\n"
        f"sys.argv = ['titan', *{list(args)!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print({IMPORTED!r} + json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
    )
    assert proc.returncode == 0, proc.stderr
    out, _, modules = proc.stdout.rpartition(IMPORTED)
    return out, set(json.loads(modules))
