"""Asking the backends about job records, all at once and each call within a time budget.

``titan jobs`` lists every record with its state and progress, asked of its backend
each time; one unreachable cluster must cost seconds, not minutes, and one backend's
bug must not stop the listing. :func:`call_all` runs budgeted calls in threads;
:func:`query_jobs` turns their answers into one :class:`JobView` per record (a call
that ran over, or raised, becomes UNKNOWN with the reason). Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.core.errors import ConfigError, TitanError
from titan.core.job_progress import Progress, progress_from_dump_folder
from titan.core.jobs import JobRecord, JobStatus, as_status, error_line

if TYPE_CHECKING:
    from titan.core.registry import BackendRegistry

TIMEOUT_ENV = "TITAN_JOBS_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 5.0
MAX_PARALLEL = 16
"""Backend calls in flight at once in :func:`call_all`."""


def jobs_timeout_s() -> float:
    """Seconds each backend call of ``titan jobs`` may take: ``$TITAN_JOBS_TIMEOUT_S``, else 5."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(
            f"{TIMEOUT_ENV}={raw!r} is not a number of seconds above 0; set it to e.g. 10, "
            f"or unset it for {DEFAULT_TIMEOUT_S:g}"
        )
    return value


@dataclass
class Answer:
    """What one budgeted call gave: its value, or why it gave none."""

    value: Any = None
    error: str = ""
    """The exception in one line (:func:`error_line`), or why there was no answer."""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out


def call_all(
    calls: Sequence[tuple[str, Callable[[], Any]]],
    timeout_s: float,
    max_parallel: int = MAX_PARALLEL,
) -> list[Answer]:
    """Run ``(group, fn)`` calls concurrently, each within ``timeout_s`` of its start.

    A call still running at its deadline is abandoned (its daemon thread may
    finish later; its answer is ignored) and answered ``timed_out``; the
    calls of its ``group`` (a backend) not yet started are then not made, since
    they would wait as long. Exceptions become :attr:`Answer.error`.
    """
    n = len(calls)
    answers: list[Answer | None] = [None] * n
    cond = threading.Condition()
    waiting = deque(range(n))
    running: dict[int, float] = {}  # index -> deadline
    hung: dict[str, str] = {}  # group -> its first call that timed out

    def work(i: int) -> None:
        try:
            answer = Answer(value=calls[i][1]())
        except Exception as exc:  # a backend's bug must not stop the listing
            answer = Answer(error=error_line(exc))
        with cond:
            if i in running:
                del running[i]
                answers[i] = answer
                cond.notify_all()

    with cond:
        while waiting or running:
            while waiting and len(running) < max_parallel:
                i = waiting.popleft()
                group = calls[i][0]
                if group in hung:
                    answers[i] = Answer(timed_out=True, error=f"not asked: {hung[group]}")
                    continue
                running[i] = time.monotonic() + timeout_s
                threading.Thread(target=work, args=(i,), daemon=True).start()
            if not running:
                continue
            now = time.monotonic()
            for i in [i for i, deadline in running.items() if deadline <= now]:
                del running[i]
                group = calls[i][0]
                answers[i] = Answer(
                    timed_out=True, error=f"{group} did not answer within {timeout_s:g} s"
                )
                hung.setdefault(group, answers[i].error)
            if running:
                cond.wait(max(0.0, min(running.values()) - time.monotonic()))
    return [a if a is not None else Answer(error="no answer") for a in answers]


@dataclass
class JobView:
    """A record with what its backend said about it now."""

    record: JobRecord
    status: JobStatus
    progress: Progress | None = None
    progress_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self.record)
        data.update(
            ref=self.record.ref,
            full_ref=self.record.full_ref,
            state=self.status.state,
            detail=self.status.detail,
            progress=self.progress.to_dict() if self.progress else None,
        )
        if self.progress_error:
            data["progress_error"] = self.progress_error
        return data


def _progress_call(backend: Any, record: JobRecord) -> Callable[[], Progress | None]:
    if callable(getattr(backend, "progress", None)):
        return lambda: backend.progress(record)
    return lambda: progress_from_dump_folder(Path(record.dump_folder))


def query_jobs(
    records: Sequence[JobRecord],
    registry: BackendRegistry,
    timeout_s: float | None = None,
    progress: bool = True,
) -> list[JobView]:
    """Each record's status (and progress) asked of its backend, every call within
    ``timeout_s`` (default :func:`jobs_timeout_s`), all at once: a backend that hangs or
    fails shows UNKNOWN with the reason, the others answer.

    Progress comes from the backend's ``progress(record)`` when it has one, else from the
    record's dump folder when it is readable here (:func:`progress_from_dump_folder`).
    """
    timeout_s = jobs_timeout_s() if timeout_s is None else timeout_s
    views = [JobView(r, JobStatus("UNKNOWN", "not asked")) for r in records]
    calls: list[tuple[str, Callable[[], Any]]] = []
    slots: list[tuple[int, str]] = []  # (view index, "state" | "progress")
    for i, record in enumerate(records):
        try:
            backend = registry.cluster(record.backend)
        except TitanError as exc:  # an uninstalled backend, or one without job records
            views[i].status = JobStatus("UNKNOWN", error_line(exc))
            continue
        calls.append((record.backend, lambda b=backend, r=record: b.state(r)))
        slots.append((i, "state"))
        if progress:
            calls.append((f"{record.backend} progress", _progress_call(backend, record)))
            slots.append((i, "progress"))
    for (i, what), answer in zip(slots, call_all(calls, timeout_s), strict=True):
        view = views[i]
        if what == "state":
            if answer.ok:
                view.status = as_status(answer.value)
            elif answer.timed_out:
                view.status = JobStatus(
                    "UNKNOWN",
                    f"{answer.error}; try again, or allow longer with {TIMEOUT_ENV}="
                    f"{max(2 * timeout_s, 10):g}",
                )
            else:
                view.status = JobStatus("UNKNOWN", answer.error)
        elif answer.ok:
            view.progress = answer.value if isinstance(answer.value, Progress) else None
        else:
            view.progress_error = answer.error
    return views
