"""Testing titan plugins, as pytest's ``pytester`` tests pytest plugins.

titan registers this module with pytest (entry point ``pytest11``), so any test
in an environment where titan-core is installed can ask for the
``titan_runner`` fixture::

    def test_my_plugin(titan_runner):
        result = titan_runner.run("--plugins", "myplugin", "--myplugin.weight=0.5")
        result.assert_ok()
        assert result.metrics[-1]["my_metric"] > 0

Every run is the real ``titan`` command in a subprocess (the local backend,
torchrun for ``--nproc 2``, the trainer, DCP checkpoints), in a fresh
folder under pytest's ``tmp_path``, with the debug model and small
defaults (:data:`SMALL_RUN`) that any argument overrides. What it wrote
comes back as a :class:`TitanResult`: exit code, output, metrics per
logged step, checkpoints.

:meth:`TitanRunner.add_plugin` installs a plugin written in the test (a
module's source) for the runs of that runner only: it writes the module
and a ``*.dist-info`` with its ``titan.plugins`` entry point into a folder
put on ``PYTHONPATH``, which is how an installed package is found, so the
plugin also reaches every rank of a multi-process run.

This module imports neither torch nor pytest at import time (pytest loads it
in every session); :meth:`TitanResult.checkpoint_state` imports torch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMALL_RUN: tuple[str, ...] = (
    "--training.steps=4",
    "--training.seq_len=64",
    "--training.local_batch_size=2",
    "--metrics.log_freq=1",
)
"""Defaults of :meth:`TitanRunner.run`: a few seconds on a CPU; later arguments override them."""


@dataclass
class TitanResult:
    """What one ``titan`` command did: exit code, output, and the files of its run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    dump_folder: Path

    def assert_ok(self) -> TitanResult:
        """Fail with the command's output unless it exited with 0."""
        if self.returncode != 0:
            raise AssertionError(
                f"titan {' '.join(self.args)} exited with {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
            )
        return self

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One dict per logged step (``metrics.jsonl``, written by rank 0), oldest first."""
        path = self.dump_folder / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def metric(self, name: str) -> dict[int, float]:
        """``{step: value}`` of one metric over the logged steps that have it."""
        return {m["step"]: m[name] for m in self.metrics if name in m}

    @property
    def checkpoints(self) -> dict[int, Path]:
        """``{step: folder}`` of the complete checkpoints of the run (default folder)."""
        from titan.core.folders import complete_checkpoints

        return dict(complete_checkpoints(self.dump_folder / "checkpoint"))

    def checkpoint_state(self, step: int, name: str) -> dict[str, Any]:
        """The state saved under ``name`` (a plugin's) in checkpoint ``step``, as plain tensors."""
        from titan.core.checkpoint import read_state

        return read_state(self.checkpoints[step], name)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def install_plugin(
    site: Path,
    name: str,
    source: str,
    *,
    distribution: str | None = None,
    version: str = "0.0.0",
) -> str:
    """Install plugin ``name`` from ``source`` (a module's code) into folder ``site``.

    Writes the module and a ``*.dist-info`` with its ``titan.plugins`` entry
    point, which is how an installed package is found: every process with
    ``site`` on ``PYTHONPATH`` (each rank, a Slurm job's tasks) sees the plugin.
    Returns the module name (``titan_test_<name>``).
    """
    module = "titan_test_" + re.sub(r"\W", "_", name)
    dist = distribution or f"titan-test-{name}"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[titan.plugins]\n{name} = {module}\n")
    return module


def pythonpath_with(site: Path, environ: Mapping[str, str] = os.environ) -> str:
    """``PYTHONPATH`` with ``site`` first and ``environ``'s entries kept after it."""
    return os.pathsep.join(p for p in (str(site), environ.get("PYTHONPATH", "")) if p)


class TitanRunner:
    """Runs ``titan`` commands for a test, in folders under ``path``."""

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.site = self.path / "site-packages"
        self.env = dict(env or {})
        self._runs = 0

    def add_plugin(
        self,
        name: str,
        source: str,
        *,
        distribution: str | None = None,
        version: str = "0.0.0",
    ) -> str:
        """Install plugin ``name`` from ``source`` (a module's code) for this runner's commands.

        Returns the module name (``titan_test_<name>``). The plugin is opt-in
        unless ``source`` sets ``AUTOLOAD = True``.
        """
        return install_plugin(self.site, name, source, distribution=distribution, version=version)

    def titan(self, *args: str, timeout: float = 600) -> TitanResult:
        """Run ``titan ARGS`` (any command: ``plugins list``, ``config show`` ...)."""
        return self._call(list(args), self.path, timeout)

    def run(self, *args: str, dump_folder: Path | None = None, timeout: float = 600) -> TitanResult:
        """``titan run`` with :data:`SMALL_RUN`, then ``args``, in a new folder (or ``dump_folder``).

        Pass the same ``dump_folder`` again to resume a run from its checkpoint.
        """
        if dump_folder is None:
            self._runs += 1
            dump_folder = self.path / f"run-{self._runs}"
        cmd = ["run", *SMALL_RUN, f"--job.dump_folder={dump_folder}", *args]
        return self._call(cmd, Path(dump_folder), timeout)

    def _call(self, args: list[str], dump_folder: Path, timeout: float) -> TitanResult:
        env = dict(os.environ)
        # Quiet, bounded CPU runs; one thread per rank (the local backend keeps that).
        env.setdefault("OMP_NUM_THREADS", "1")
        env.update(PYTHONUNBUFFERED="1", COLUMNS=env.get("COLUMNS", "200"))
        env.pop("TITAN_BROKEN_PLUGINS_REPORTED", None)
        if self.site.is_dir():
            env["PYTHONPATH"] = pythonpath_with(self.site, env)
        env.update(self.env)
        proc = subprocess.run(
            [sys.executable, "-m", "titan.core.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.path,
            timeout=timeout,
        )
        return TitanResult(args, proc.returncode, proc.stdout, proc.stderr, Path(dump_folder))


try:  # the fixture, when pytest loads this module
    import pytest
except ImportError:  # pragma: no cover - only plugin test suites need it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def titan_runner(tmp_path: Path) -> Iterator[TitanRunner]:
        """A :class:`TitanRunner` working in this test's ``tmp_path``."""
        tmp_path.mkdir(parents=True, exist_ok=True)
        yield TitanRunner(tmp_path)


__all__ = ["SMALL_RUN", "TitanResult", "TitanRunner", "titan_runner"]


def titan_in_process(*argv: str) -> tuple[int, str, str]:
    """``titan ARGV`` in this process: (exit code, stdout, stderr), as the console script.

    For checks that end before anything launches (bad input, ``--dry-run``):
    no interpreter start, no second torch import, so a table of a hundred
    mistakes runs in seconds. A run that does train runs in this process too.
    """
    import io

    from titan.core.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def folder_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-1 of its bytes: compare two to see what changed."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
