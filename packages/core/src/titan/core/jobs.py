"""Records of the jobs titan launched on clusters, shared by every backend.

``titan run --backend slurm`` and ``--backend sagemaker`` return as soon as
the job is submitted; ``titan jobs``, ``titan logs JOB`` and ``titan cancel
JOB`` find it again later. One vocabulary serves all backends: a record
holds only what identifies the job (backend, the backend's own id, where
titan wrote its config and logs); its state is asked of the backend each
time, so a record never goes stale.

Records are small JSON files, one per job, under ``$TITAN_HOME/jobs``
(default ``~/.titan/jobs``). This module is torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from titan.core.errors import ConfigError

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
    "UNKNOWN",
)
"""The states a cluster backend reports (its own states mapped onto these)."""

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "STOPPED", "TIMEOUT"})


def titan_home() -> Path:
    """Where titan keeps per-user state: ``$TITAN_HOME``, else ``~/.titan``."""
    return Path(os.environ.get("TITAN_HOME") or Path.home() / ".titan")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobRecord:
    """What identifies one launched job; the backend knows the rest."""

    backend: str
    """Backend name, as in ``--backend``."""
    id: str
    """The backend's own id: a Slurm job id, a SageMaker training job name."""
    name: str
    """A human name (the job name given to the cluster)."""
    dump_folder: str
    """Where titan wrote the job's config (absolute path on this machine)."""
    submitted: str = field(default_factory=now_iso)
    """Submission time, ISO-8601 UTC."""
    logs: list[str] = field(default_factory=list)
    """Log files on this machine, if the backend writes any here (Slurm does)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific values (a submitit folder, a region, S3 URIs ...)."""

    @property
    def ref(self) -> str:
        """How the user names this job: ``backend:id``."""
        return f"{self.backend}:{self.id}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class JobStore:
    """The folder of job records; one ``<backend>-<id>.json`` per job."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, backend: str, job_id: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job_id)
        return self.folder / f"{backend}-{safe}.json"

    def add(self, record: JobRecord) -> Path:
        """Write (or replace) a record, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(record.backend, record.id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(record.to_json())
        tmp.replace(path)
        return path

    def all(self) -> list[JobRecord]:
        """Every readable record, newest first (a damaged file is skipped, not fatal)."""
        if not self.folder.is_dir():
            return []
        records = []
        for path in self.folder.glob("*.json"):
            try:
                records.append(JobRecord.from_json(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(records, key=lambda r: (r.submitted, r.id), reverse=True)

    def find(self, ref: str) -> JobRecord:
        """The job named ``ref``: its id, or ``backend:id`` when ids of two backends clash."""
        records = self.all()
        backend, sep, job_id = ref.partition(":")
        if sep and any(r.backend == backend for r in records):
            matches = [r for r in records if r.backend == backend and r.id == job_id]
        else:
            matches = [r for r in records if r.id == ref or r.name == ref]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = ", ".join(r.ref for r in records[:10]) or "none yet"
            raise ConfigError(
                f"no job '{ref}' among the jobs titan launched (known: {known}); "
                "see `titan jobs` for the list"
            )
        raise ConfigError(
            f"job '{ref}' is ambiguous ({', '.join(r.ref for r in matches)}); name it as BACKEND:ID"
        )


def job_store() -> JobStore:
    """The user's job records (``$TITAN_HOME/jobs``; tests point TITAN_HOME at a tmp dir)."""
    return JobStore(titan_home() / "jobs")
