"""Testing titan plugins, as pytest's ``pytester`` tests pytest plugins (docs/plugins.md).

Opt-in, like ``pytester``: installing titan registers nothing with pytest, so a project
that does not ask sees no titan fixture. A plugin's test suite asks in its rootdir's
conftest.py, ``pytest_plugins = ["titan.core.testing"]``, or with ``pytest -p
titan.core.testing``; then its tests get the ``titan_runner`` fixture (a
:class:`TitanRunner` in the test's ``tmp_path``).

:meth:`TitanRunner.run` is the real ``titan run`` in a subprocess (the local backend,
torchrun for ``--nproc 2``, DCP checkpoints) with the debug model and the small
defaults of :data:`SMALL_RUN`; a :class:`TitanResult` holds its exit code, output,
metrics and checkpoints. :meth:`TitanRunner.run_in_process` runs a one-rank job in the
test's process and also records every hook call in order (:class:`HookCall`, with
pluggy's own call monitoring), so a test asserts which hooks ran, with what, in which
order, instead of parsing output. :meth:`TitanRunner.add_plugin` installs a plugin
written in the test (a module and a ``*.dist-info`` with its entry point, in a folder
put on ``PYTHONPATH``, or on ``sys.path`` for an in-process run), which is how an
installed package is found, so it reaches every rank.

No torch at import time (scripts and cluster jobs import :func:`install_plugin`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
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

_WARNED_ENV = "TITAN_BROKEN_PLUGINS_REPORTED"  # titan.core.plugins: broken plugins named so far


@dataclass(eq=False)  # one call is equal to itself only: its arguments are live objects
class HookCall:
    """One call of a titan hook during an in-process run (:meth:`TitanRunner.run_in_process`).

    ``kwargs`` are the objects titan passed, not copies (a dict that a plugin or titan
    changes after the call shows its later contents; the ``trainer`` is the live one).
    ``plugins`` names the plugins whose implementations pluggy called, in its calling
    order (the last registered first, ``tryfirst``/``trylast`` respected); a
    ``firstresult`` hook stops at the first that answers, so the later ones are listed
    but may not have run. Only the plugins the hook reaches are listed: the active ones
    (titan hides the others), or every installed one for a registration hook.
    """

    name: str
    kwargs: dict[str, Any]
    plugins: tuple[str, ...]
    result: Any = None
    """What the call returned: a list of answers, or one answer for a ``firstresult`` hook."""
    error: BaseException | None = None
    """What an implementation raised, if one did (the result is then ``None``)."""


@dataclass
class TitanResult:
    """What one ``titan`` command did: exit code, output, and the files of its run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    dump_folder: Path
    hook_calls: list[HookCall] | None = None
    """Every hook call, in the order they started; ``None`` for a subprocess run, whose
    calls happen in other processes and are not recorded."""

    def calls(self, name: str) -> list[HookCall]:
        """The recorded calls of hook ``name``, in order (an in-process run's only)."""
        return [c for c in self._recorded() if c.name == name]

    @property
    def hook_names(self) -> list[str]:
        """The name of each recorded hook call, in order: the job's life in hooks."""
        return [c.name for c in self._recorded()]

    def _recorded(self) -> list[HookCall]:
        if self.hook_calls is None:
            raise AssertionError(
                "hook calls are recorded by TitanRunner.run_in_process only; "
                "this run was a subprocess (TitanRunner.run)"
            )
        return self.hook_calls

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
        cmd, folder = self._run_command(args, dump_folder)
        return self._call(cmd, folder, timeout)

    def run_in_process(self, *args: str, dump_folder: Path | None = None) -> TitanResult:
        """:meth:`run` in this process, with a record of every hook call (``.hook_calls``).

        The same command, folder and defaults as :meth:`run`, on the local backend's
        one process, which trains inside ``titan`` itself; no interpreter start, no
        second torch import, and the hooks are watched with pluggy's own
        ``add_hookcall_monitoring`` on the plugin manager every ``load_plugins()``
        shares. The plugins added with :meth:`add_plugin` are on ``sys.path`` and
        discovered for this run only; ``env`` is set and the working folder is
        :attr:`path` meanwhile, as for a subprocess. A job of more than one rank
        (``--nproc 2``) stops before launch with exit code 2: its hooks would run in
        other processes, unrecorded (use :meth:`run`). An exception that the command
        would print as a traceback is raised here, in the test.
        """
        cmd, folder = self._run_command(args, dump_folder)
        with (
            _captured_output() as (out, err),
            self._in_this_process(),
            _one_process_only(),
            record_hook_calls() as calls,  # outside the check: it records the refused call too
        ):
            code = _call_main(cmd)
        return TitanResult(cmd, code, out.getvalue(), err.getvalue(), folder, hook_calls=calls)

    def _run_command(self, args: Sequence[str], dump_folder: Path | None) -> tuple[list[str], Path]:
        if dump_folder is None:
            self._runs += 1
            dump_folder = self.path / f"run-{self._runs}"
        return ["run", *SMALL_RUN, f"--job.dump_folder={dump_folder}", *args], Path(dump_folder)

    @contextlib.contextmanager
    def _in_this_process(self) -> Iterator[None]:
        """This runner's plugins, environment and working folder in this process; undone after.

        The site folder goes first on ``sys.path`` (as on a subprocess's ``PYTHONPATH``)
        and the plugins are scanned again, so the test's plugins are found; afterwards the
        folder, its modules and the scan that saw them are dropped, so the next test (or
        another runner with a plugin of the same name) starts from the installed plugins.
        """
        from titan.core.plugins import forget_discovered_plugins

        site = str(self.site) if self.site.is_dir() else None
        modules_before = set(sys.modules)
        saved_env = {k: os.environ.get(k) for k in {*self.env, _WARNED_ENV}}
        cwd = os.getcwd()
        os.environ.pop(_WARNED_ENV, None)  # this run's broken plugins are reported in its output
        os.environ.update(self.env)
        os.chdir(self.path)
        if site:
            sys.path.insert(0, site)
            importlib.invalidate_caches()
            forget_discovered_plugins()
        try:
            yield
        finally:
            os.chdir(cwd)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if site:
                with contextlib.suppress(ValueError):
                    sys.path.remove(site)
                for name in set(sys.modules) - modules_before:
                    file = getattr(sys.modules[name], "__file__", None) or ""
                    if file.startswith(site + os.sep):
                        del sys.modules[name]
                sys.path_importer_cache.pop(site, None)
                importlib.invalidate_caches()
                forget_discovered_plugins()

    def _call(self, args: list[str], dump_folder: Path, timeout: float) -> TitanResult:
        env = dict(os.environ)
        # Quiet, bounded CPU runs; one thread per rank (the local backend keeps that).
        env.setdefault("OMP_NUM_THREADS", "1")
        # Tables 200 columns wide, whatever the terminal or test runner says (pytest-xdist's
        # workers have COLUMNS=80), so a row is one line; `env["COLUMNS"]` sets another width.
        env.update(PYTHONUNBUFFERED="1", COLUMNS="200")
        env.pop(_WARNED_ENV, None)
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


@contextlib.contextmanager
def record_hook_calls() -> Iterator[list[HookCall]]:
    """Record every titan hook call made in this process meanwhile, into the list it yields.

    Hooks are watched with pluggy's ``PluginManager.add_hookcall_monitoring`` on the
    manager that :func:`titan.core.plugins.load_plugins` shares with every caller (the
    CLI, the launch, the trainer), so each call is seen whoever makes it, including
    calls no plugin implements. Entries are appended when a call starts (a hook called
    from inside another comes after it) and completed with the result when it returns.
    The monitoring is removed on exit. :meth:`TitanRunner.run_in_process` uses it; use
    it directly around :func:`titan_in_process` or any code that calls hooks.
    """
    from titan.core.plugins import load_plugins

    calls: list[HookCall] = []
    running: list[HookCall] = []

    def before(name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        call = HookCall(name, dict(kwargs), tuple(i.plugin_name for i in reversed(impls)))
        calls.append(call)
        running.append(call)

    def after(outcome: Any, name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        call = running.pop()
        if outcome.exception is not None:
            call.error = outcome.exception
        else:
            call.result = outcome.get_result()

    undo = load_plugins().pm.add_hookcall_monitoring(before, after)
    try:
        yield calls
    finally:
        undo()


@contextlib.contextmanager
def _one_process_only() -> Iterator[None]:
    """Stop a job of more than one rank at its checks, before it launches other processes.

    An in-process record would hold only the launching process's hooks (the checks),
    which a test would misread as "the step hooks never ran".
    """
    from titan.core.errors import PluginError
    from titan.core.plugins import load_plugins

    def before(name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        layout = kwargs.get("layout")
        if name == "titan_validate_config" and layout is not None and layout.world_size > 1:
            raise PluginError(
                f"TitanRunner.run_in_process runs a job of one rank in this process, and this "
                f"job has {layout.world_size} ranks ({layout.where}): its hooks would run in "
                "other processes; use TitanRunner.run for it"
            )

    undo = load_plugins().pm.add_hookcall_monitoring(before, lambda *_: None)
    try:
        yield
    finally:
        undo()


@contextlib.contextmanager
def _captured_output() -> Iterator[tuple[Any, Any]]:
    """``sys.stdout`` and ``sys.stderr`` replaced by two ``StringIO`` meanwhile (yielded)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = old


def _call_main(argv: Sequence[str]) -> int:
    """``titan ARGV`` through the console script's own function; its exit code."""
    from titan.core.cli import main

    try:
        main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


def titan_in_process(*argv: str) -> tuple[int, str, str]:
    """``titan ARGV`` in this process: (exit code, stdout, stderr), as the console script.

    For checks that end before anything launches (bad input, ``--dry-run``):
    no interpreter start, no second torch import, so a table of a hundred
    mistakes runs in seconds. A run that does train runs in this process too
    (one rank); :meth:`TitanRunner.run_in_process` adds the runner's plugins
    and a record of the hook calls.
    """
    with _captured_output() as (out, err):
        code = _call_main(argv)
    return code, out.getvalue(), err.getvalue()


try:  # the fixture, when a test suite opts in (pytest_plugins or -p titan.core.testing)
    import pytest
except ImportError:  # pragma: no cover - only plugin test suites need it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def titan_runner(tmp_path: Path) -> Iterator[TitanRunner]:
        """A :class:`TitanRunner` working in this test's ``tmp_path``."""
        tmp_path.mkdir(parents=True, exist_ok=True)
        yield TitanRunner(tmp_path)


__all__ = [
    "SMALL_RUN",
    "HookCall",
    "TitanResult",
    "TitanRunner",
    "install_plugin",
    "record_hook_calls",
    "titan_in_process",
    "titan_runner",
]


def folder_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-1 of its bytes: compare two to see what changed."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
