"""Registries that plugins fill: model families and launch backends.

Both are torch-free: a model family names its builder as an import string
(``"pkg.module:function"``), imported only when a model is actually built,
so ``titan models list`` and ``titan --help`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from titan.core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from titan.core.jobs import JobRecord, JobStatus
    from titan.core.launch import PreparedJob
    from titan.core.layout import LaunchLayout


def import_object(path: str) -> Any:
    """``"package.module:attr"`` -> the attribute."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _unknown(kind: str, name: str, known: list[str], fix: str, where: str = "") -> ConfigError:
    by_lower = {k.lower(): k for k in known}  # '8b' should find '8B'
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    hint = f"did you mean '{by_lower[close[0]]}'? " if close else ""
    return ConfigError(
        f"unknown {kind} '{name}'{where}; {hint}available: {', '.join(known)} ({fix})"
    )


ARGS_FILE_SUFFIX = ".json"
"""A ``model.flavor`` ending in this is a file of args, not a registered flavor name."""


@dataclass
class ModelFamily:
    """A model family: named flavors (hyper-parameter sets) and how to build one.

    ``flavors`` maps a flavor name to its args object (any dataclass the
    builder understands). ``builder`` is ``"module:callable"``; calling it
    with the args returns an ``nn.Module`` that has ``init_weights()``.

    ``parameter_count`` (optional, ``"module:callable"``) counts the parameters
    of a model built with given args from the args alone. ``titan models list``
    uses it so that listing needs no torch (importing torch is most of a
    second or more); without it the count comes from a build on the meta device.

    ``args_from_dict`` (optional, ``"module:callable"``) turns a dict into an
    args object. With it, ``model.flavor`` may also be the path of a JSON file
    whose ``"args"`` key holds that dict (``titan convert hf-to-titan`` writes
    one as ``titan_model.json``), so a converted checkpoint of a size nobody
    registered can still be trained.
    """

    name: str
    flavors: dict[str, Any]
    builder: str
    description: str = ""
    args_from_dict: str = ""
    parameter_count: str = ""

    def build(self, args: Any) -> Any:
        return import_object(self.builder)(args)

    def flavor(self, name: str) -> Any:
        if name in self.flavors:
            return self.flavors[name]
        if name.endswith(ARGS_FILE_SUFFIX) and self.args_from_dict:
            return self._args_from_file(Path(name))
        fix = "set model.flavor"
        if self.args_from_dict:
            fix += " to one of them or to a titan_model.json from `titan convert hf-to-titan`"
        raise _unknown("flavor", name, list(self.flavors), fix, f" for model '{self.name}'")

    def _args_from_file(self, path: Path) -> Any:
        if not path.is_file():
            raise ConfigError(
                f"model.flavor '{path}' looks like an args file but does not exist; "
                "fix the path or use a registered flavor (see `titan models list`)"
            )
        try:
            data = json.loads(path.read_text())
            return import_object(self.args_from_dict)(data["args"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"model.flavor file '{path}' does not hold valid '{self.name}' args "
                f"({type(exc).__name__}: {exc}); write it with `titan convert hf-to-titan` "
                'or fix its "args" entry'
            ) from None


@dataclass
class ModelRegistry:
    families: dict[str, ModelFamily] = field(default_factory=dict)

    def add_family(self, family: ModelFamily) -> None:
        if family.name in self.families:
            raise PluginError(
                f"model family '{family.name}' is registered twice; uninstall or rename one"
            )
        self.families[family.name] = family

    def add_flavor(self, family: str, flavor: str, args: Any) -> None:
        """Let a third party add a flavor (e.g. a 1B Llama 3) to an existing family.

        Plugins register in entry-point name order, so the family may not be
        there yet when a third party's hook runs: order its hook after the
        family's with ``@hookimpl(trylast=True)``.
        """
        if family not in self.families:
            raise PluginError(
                f"cannot add flavor '{flavor}' to model family '{family}': no such family yet "
                f"(registered: {', '.join(sorted(self.families)) or 'none'}); fix the family "
                "name, or mark the titan_register_models hook @hookimpl(trylast=True)"
            )
        if flavor in self.families[family].flavors:
            raise PluginError(
                f"flavor '{flavor}' of model family '{family}' is registered twice; rename one"
            )
        self.families[family].flavors[flavor] = args

    def get(self, name: str) -> ModelFamily:
        if name not in self.families:
            raise _unknown("model", name, sorted(self.families), "set model.name")
        return self.families[name]


class Backend(Protocol):
    """Where a job runs.

    ``titan run`` asks the backend for its :meth:`layout` first, checks the
    whole job against it (:func:`titan.core.checks.check_job`: degrees, batch,
    model state memory, every plugin's ``titan_validate_config``), and only
    then calls :meth:`launch`, with ``job.layout`` set. A mistake is thus
    found before anything is written, uploaded, queued or paid for, for
    every backend alike.
    """

    name: str
    description: str

    def layout(self, job: PreparedJob, offline: bool) -> LaunchLayout:
        """Nodes, processes per node and their device, as far as this backend knows them.

        ``offline`` (``--dry-run``): answer without asking a cluster or a
        cloud API. Raise :class:`~titan.core.errors.ConfigError` (one line,
        naming the fix) for what cannot launch at all, e.g. an unknown
        instance type, and for mistakes in the backend's own config section
        (they are then found before anything is printed, written or sent); put
        what could not be known in ``LaunchLayout.notes``.
        """
        ...

    def launch(self, job: PreparedJob, dry_run: bool, wait: bool = False) -> int:
        """Launch the checked job; the job's exit code (0 = success).

        ``wait``: a backend that submits and returns (a cluster) follows the
        job to its end when true and returns the job's exit status; one that
        runs in the foreground (local) always waits. Pass ``job.layout`` to
        the ranks as ``TITAN_LAUNCH_LAYOUT`` (``layout.to_env()``), so that
        they check against the layout the CLI checked.
        """
        ...


@runtime_checkable
class ClusterBackend(Backend, Protocol):
    """A backend whose jobs outlive ``titan run``: ``titan jobs``, ``logs``, ``cancel`` reach it.

    ``launch`` stores a :class:`titan.core.jobs.JobRecord` (``job_store().add``)
    for every job it submits, named ``unique_name(job_name(job))`` and with its
    ``cluster`` set (so that a new cluster's ids never replace an old one's
    records); the CLI hands that record back to these methods.

    ``titan jobs`` gives each call a few seconds (``TITAN_JOBS_TIMEOUT_S``,
    default 5) and shows UNKNOWN with the reason when it runs over or raises;
    answer quickly, and say in the detail what could not be asked.

    Optional: ``progress(record) -> titan.core.jobs.Progress | None`` for a
    backend whose runs write their ``metrics.jsonl`` where this machine cannot
    read it (SageMaker: from the job's logs). Without it, ``titan jobs`` reads
    the record's dump folder (:func:`titan.core.jobs.progress_from_dump_folder`).
    It is not a member of this protocol, so backends without it still match.
    """

    def state(self, record: JobRecord) -> JobStatus | str:
        """The job's state now: a :class:`~titan.core.jobs.JobStatus` (one of
        :data:`~titan.core.jobs.STATES` and a one-line detail: why, and what the user can
        do, e.g. the resume command of a RESUMABLE job); a bare state string from a
        backend written before details (plugin API 1.1) is still accepted."""
        ...

    def logs(self, record: JobRecord, follow: bool, out: TextIO) -> int:
        """Write the job's log to ``out`` (with ``follow``, until the job ends).

        Returns 0, or the job's non-zero exit status when it failed.
        """
        ...

    def cancel(self, record: JobRecord) -> JobStatus | None:
        """Ask the job to stop; its status after the request.

        CANCELLED / STOPPING / STOPPED with what it left in the detail (e.g. "cancelled;
        checkpoint step-20 in /shared/out/checkpoint"), or, for a job that had already
        ended, its final state with a detail such as "had already finished; nothing to
        cancel" (not an error). None (backends written before statuses): the CLI asks
        :meth:`state` afterwards.
        """
        ...


@dataclass
class BackendRegistry:
    backends: dict[str, Backend] = field(default_factory=dict)

    def add(self, backend: Backend) -> None:
        if backend.name in self.backends:
            raise ValueError(f"backend '{backend.name}' is registered twice")
        self.backends[backend.name] = backend

    def get(self, name: str) -> Backend:
        if name not in self.backends:
            raise _unknown("backend", name, sorted(self.backends), "pass --backend NAME")
        return self.backends[name]

    def layout(self, backend: Backend, job: PreparedJob, offline: bool) -> LaunchLayout:
        """``backend.layout(job, offline)``; for a backend written before layouts existed
        (plugin API 1.1), the ``[launch]`` numbers on an unknown device, said in a note."""
        if hasattr(backend, "layout"):
            return backend.layout(job, offline)
        from titan.core.layout import Device, LaunchLayout

        launch = job.config.launch
        return LaunchLayout(
            nodes=max(launch.nnodes, 1),
            procs_per_node=max(launch.nproc_per_node, 1),
            device=Device("unknown"),
            where=f"backend '{backend.name}'",
            procs_option="--nproc {n}",
            nodes_option="--nnodes {n}",
            notes=(
                f"backend '{backend.name}' gives no launch layout (a layout(job, offline) "
                "method): checked as --nproc x --nnodes processes, device memory unknown",
            ),
        )

    def cluster(self, name: str) -> ClusterBackend:
        """The backend of a job record; an error if it cannot list, show or cancel jobs."""
        backend = self.get(name)
        if not isinstance(backend, ClusterBackend):
            raise ConfigError(
                f"backend '{name}' runs jobs in the foreground and keeps no job records; "
                "`titan jobs`, `logs` and `cancel` serve cluster backends (slurm, sagemaker)"
            )
        return backend


BuildFn = Callable[[Any], Any]
