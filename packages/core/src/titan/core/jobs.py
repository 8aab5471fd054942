"""Records of the jobs titan launched on clusters, shared by every backend.

``titan run --backend slurm`` and ``--backend sagemaker`` return as soon as
the job is submitted; ``titan jobs``, ``titan logs JOB``, ``titan cancel JOB``
and ``titan forget JOB`` find it again later. One vocabulary serves all
backends: a record holds only what identifies the job (backend, cluster, the
backend's own id, a name, where titan wrote its config and logs); its state
(a :class:`JobStatus`: one of :data:`STATES` and a one-line detail) is asked of
the backend each time, within a time budget (:func:`titan.core.job_queries.query_jobs`), so a record
never goes stale and an unreachable cluster never stalls the listing.

Records are small JSON files, one per job, under ``$TITAN_HOME/jobs``
(default ``~/.titan/jobs``). They are titan's memory only: removing one
(``titan forget``, ``titan jobs --prune``) touches nothing on the cluster or in
the dump folder. This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from titan.core.errors import ConfigError, TitanError

# Re-exported: backends build their progress with these (registry.ClusterBackend.progress).
from titan.core.job_progress import Progress, progress_from_dump_folder, progress_from_rows

__all__ = [
    "FINAL_STATES",
    "STATES",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "Progress",
    "as_status",
    "error_line",
    "first_line",
    "job_name",
    "job_store",
    "progress_from_dump_folder",
    "progress_from_rows",
    "select",
    "short_ref",
    "unique_name",
]


STATES = (
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "STOPPING",
    "STOPPED",
    "REQUEUED",
    "TIMEOUT",
    "RESUMABLE",
    "UNKNOWN",
)
"""The states a cluster backend reports (its own states mapped onto these).

RESUMABLE: the job stopped after a complete checkpoint and can be continued
(its requeue budget is used up, it hit a time limit without requeue, SageMaker's
MaxRuntime after a checkpoint); the :class:`JobStatus` detail says how."""

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "STOPPED", "TIMEOUT", "RESUMABLE"})


def titan_home() -> Path:
    """Where titan keeps per-user state: ``$TITAN_HOME``, else ``~/.titan``."""
    return Path(os.environ.get("TITAN_HOME") or Path.home() / ".titan")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- states -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    """A job's state and, in one line, why and what the user can do about it."""

    state: str
    """One of :data:`STATES`."""
    detail: str = ""
    """E.g. "requeue budget used (3 of 3) after a checkpoint at step 40; resume: titan run
    ...", "cancelled; checkpoint step-20 in /shared/out/checkpoint", "Slurm did not answer
    within 5 s: ...". Always set for UNKNOWN (:func:`as_status` sees to it)."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def __str__(self) -> str:
        return f"{self.state}: {self.detail}" if self.detail else self.state


def first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def error_line(exc: BaseException) -> str:
    """An exception in one line: a TitanError's message, else ``Type: message``."""
    line = first_line(str(exc))
    if isinstance(exc, TitanError):
        return line or type(exc).__name__
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def as_status(value: Any) -> JobStatus:
    """What ``ClusterBackend.state`` returned (a :class:`JobStatus`, or a state string from a
    backend written before statuses had details) as a :class:`JobStatus`.

    A state outside :data:`STATES` becomes UNKNOWN naming it; UNKNOWN always has a detail;
    the detail is one line.
    """
    if isinstance(value, JobStatus):
        state, detail = value.state, value.detail
    elif isinstance(value, str):
        state, detail = value, ""
    elif value is None:
        return JobStatus("UNKNOWN", "the backend gave no state")
    else:
        state = getattr(value, "state", None)
        detail = getattr(value, "detail", "")
        if not isinstance(state, str):
            return JobStatus("UNKNOWN", f"the backend answered {type(value).__name__}, not a state")
    word = state.strip().upper()
    detail = " ".join(str(detail or "").split())
    if word not in STATES:
        shown = f"; {detail}" if detail else ""
        return JobStatus("UNKNOWN", f"the backend reported state '{state.strip()}'{shown}")
    if word == "UNKNOWN" and not detail:
        detail = "the backend did not say why"
    return JobStatus(word, detail)


# --- records ------------------------------------------------------------------------------


@dataclass
class JobRecord:
    """What identifies one launched job; the backend knows the rest."""

    backend: str
    """Backend name, as in ``--backend``."""
    id: str
    """The backend's own id: a Slurm job id, a SageMaker training job name."""
    name: str
    """A human name, unique among the records (:func:`job_name`, :func:`unique_name`)."""
    dump_folder: str
    """Where titan wrote the job's config (absolute path on this machine)."""
    submitted: str = field(default_factory=now_iso)
    """Submission time, ISO-8601 UTC."""
    logs: list[str] = field(default_factory=list)
    """Log files on this machine, if the backend writes any here (Slurm does)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific values (a submitit folder, a region, S3 URIs ...)."""
    cluster: str = ""
    """Which cluster's ids ``id`` is one of (Slurm: ClusterName; SageMaker: account/region);
    "" in records written before clusters were recorded."""

    @property
    def ref(self) -> str:
        """How the user names this job across backends: ``backend:id``."""
        return f"{self.backend}:{self.id}"

    @property
    def full_ref(self) -> str:
        """The name no other record shares: ``backend:cluster/id`` (``backend:id`` without a
        cluster)."""
        return f"{self.backend}:{self.cluster}/{self.id}" if self.cluster else self.ref

    @property
    def key(self) -> str:
        """The record's file name without ``.json``: ``<backend>-<cluster>-<id>``
        (``<backend>-<id>`` without a cluster, as records were first named)."""
        parts = [self.backend, self.cluster, self.id] if self.cluster else [self.backend, self.id]
        return "-".join(_safe(p) for p in parts)

    def same_job(self, other: JobRecord) -> bool:
        return (self.backend, self.cluster, self.id) == (other.backend, other.cluster, other.id)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _matches(record: JobRecord, key: str) -> bool:
    return key in (record.id, record.name) or bool(
        record.cluster and key == f"{record.cluster}/{record.id}"
    )


class JobStore:
    """The folder of job records; one ``<backend>-<cluster>-<id>.json`` per job."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, record: JobRecord) -> Path:
        return self.folder / f"{record.key}.json"

    def add(self, record: JobRecord) -> Path:
        """Write (or replace: same key, same job) a record, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(record)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(record.to_json())
        tmp.replace(path)
        return path

    def _files(self) -> list[tuple[Path, JobRecord]]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("*.json"):
            try:
                found.append((path, JobRecord.from_json(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return found

    def all(self) -> list[JobRecord]:
        """Every readable record, newest first (a damaged file is skipped, not fatal)."""
        records = [r for _, r in self._files()]
        return sorted(records, key=lambda r: (r.submitted, r.id), reverse=True)

    def remove(self, record: JobRecord) -> list[Path]:
        """Delete the record(s) of ``record``'s job; the files removed. Nothing else is touched."""
        removed = []
        for path, other in self._files():
            if other.same_job(record):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def find(self, ref: str) -> JobRecord:
        """The job named ``ref``: its id, its name, ``backend:id`` or ``backend:cluster/id``
        (also ``cluster/id``); an error naming the candidates when several match."""
        records = self.all()
        matches = select(records, ref)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = ", ".join(short_ref(r, records) for r in records[:10]) or "none yet"
            raise ConfigError(
                f"no job '{ref}' among the jobs titan launched (known: {known}); "
                "see `titan jobs` for the list"
            )
        forms = ", ".join(r.full_ref if len(select(records, r.ref)) > 1 else r.ref for r in matches)
        raise ConfigError(f"job '{ref}' is ambiguous ({forms}); name it as one of these")


def select(records: Sequence[JobRecord], ref: str) -> list[JobRecord]:
    """The records ``ref`` names (see :meth:`JobStore.find`); an exact ``full_ref`` wins."""
    exact = [r for r in records if r.full_ref == ref]
    if len(exact) == 1:
        return exact
    backend, sep, rest = ref.partition(":")
    if sep and any(r.backend == backend for r in records):
        return [r for r in records if r.backend == backend and _matches(r, rest)]
    return [r for r in records if _matches(r, ref)]


def short_ref(record: JobRecord, records: Sequence[JobRecord]) -> str:
    """The shortest of id, ``cluster/id``, ``backend:id``, ``backend:cluster/id`` that
    selects ``record`` alone among ``records``."""
    forms = [record.id]
    if record.cluster:
        forms.append(f"{record.cluster}/{record.id}")
    forms += [record.ref, record.full_ref]
    for form in forms:
        if select(records, form) == [record]:
            return form
    return record.full_ref


def job_store() -> JobStore:
    """The user's job records (``$TITAN_HOME/jobs``; tests point TITAN_HOME at a tmp dir)."""
    return JobStore(titan_home() / "jobs")


# --- names --------------------------------------------------------------------------------

DEFAULT_DESCRIPTION = "titan job"
"""``job.description``'s default: not a name the user chose."""


def job_name(job: Any) -> str:
    """The base name of a submitted job (a :class:`~titan.core.launch.PreparedJob`):
    ``job.description`` when the user set one, else the config file's name without
    ``.toml``, else ``<model>-<flavor>``. Pass it through :func:`unique_name`."""
    config = job.config
    description = first_line(getattr(config.job, "description", "") or "")
    if description and description != DEFAULT_DESCRIPTION:
        return description
    config_file = getattr(job, "config_file", None)
    if config_file:
        return Path(config_file).stem
    flavor = str(config.model.flavor)
    if flavor.endswith(".json"):  # a titan_model.json of args
        flavor = Path(flavor).parent.name or Path(flavor).stem
    return f"{config.model.name}-{flavor}"


def unique_name(base: str, store: JobStore | None = None) -> str:
    """``base``, or ``base-2``, ``base-3`` ... : the first that no record uses as a name or id,
    so that ``titan logs NAME`` selects one job."""
    base = first_line(base) or "job"
    records = (store or job_store()).all()
    taken = {r.name for r in records} | {r.id for r in records}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
