"""The ``titan jobs``, ``logs``, ``cancel`` and ``forget`` commands: the jobs titan launched
on clusters, asked of their backends (:mod:`titan.core.jobs`, :mod:`titan.core.job_queries`).

Every backend gets the same verbs through its ``ClusterBackend`` methods; nothing here
names a backend. Torch-free.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from titan.core.cli_common import WIDE, console, out


def _backend_registry():
    """Installed backends (registration hooks only: no config, no torch)."""
    from titan.core.plugins import load_plugins
    from titan.core.registry import BackendRegistry

    registry = BackendRegistry()
    load_plugins().pm.hook.titan_register_backends(registry=registry)
    return registry


_RECORDS_ONLY = (
    "Records are titan's memory only: nothing on the cluster or in the dump folder is touched."
)


def jobs_list(
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Show the newest N jobs.", min=1)
    ] = 20,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the records with state, detail and progress as JSON."),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Forget the records of jobs that have ended (their backend says so; a job whose "
            "state cannot be asked is kept). " + _RECORDS_ONLY,
        ),
    ] = False,
) -> None:
    """The jobs titan launched on clusters (Slurm, SageMaker, ...), newest first: state and why,
    progress (step, loss, tokens/s per device, ETA).

    Each backend gets TITAN_JOBS_TIMEOUT_S seconds (default 5) per question; one that does not
    answer in time is shown UNKNOWN, with the reason.
    """
    from titan.core.job_queries import query_jobs
    from titan.core.jobs import job_store

    store = job_store()
    if prune:
        _prune(store)
        return
    records = store.all()
    shown = records[:limit]
    if not shown:
        if as_json:
            sys.stdout.write("[]\n")
        console.print("no jobs yet: `titan run --backend slurm|sagemaker ...` launches one")
        return
    views = query_jobs(shown, _backend_registry())
    if as_json:
        import json

        sys.stdout.write(json.dumps([v.to_dict() for v in views], indent=2) + "\n")
        return
    header, rows = _job_rows(views, records)
    if out.is_terminal and out.size.width >= WIDE:  # the table, then each job's detail
        table = Table(title="titan jobs", box=box.SIMPLE_HEAD)
        for col in header[:-1]:
            table.add_column(
                col, justify="right" if col in _RIGHT else "left", no_wrap=col != "name"
            )
        for row in rows:
            table.add_row(*(escape(c) for c in row[:-1]))
        out.print(table)
        for row in rows:
            if row[-1]:
                out.print(Padding(Text(f"{row[0]} {row[3]}: {row[-1]}"), (0, 0, 0, 2)))
    elif out.is_terminal:  # narrower: one block per job
        out.print("[bold]titan jobs[/]")
        for job, backend, name, state, step, loss, tps, eta, submitted, detail in rows:
            out.print(f"\n[bold]{escape(job)}[/]  {escape(name)}  ({escape(backend)}, {submitted})")
            figures = [state, step] + [
                f"{label} {value}"
                for label, value in (("loss", loss), ("tok/s", tps), ("ETA", eta))
                if value != "-"
            ]
            for text in ("  ".join(f for f in figures if f != "-"), detail):
                if text:
                    out.print(Padding(Text(text), (0, 0, 0, 2)))
    else:  # piped: one line per job, whatever the width, for grep and scripts
        sys.stdout.write(_plain_table(header, rows))
    if len(records) > len(shown):
        console.print(f"[dim]{len(records) - len(shown)} older job(s) not shown (--limit)[/]")


_RIGHT = ("loss", "tok/s", "ETA")


def _job_rows(views, records) -> tuple[list[str], list[list[str]]]:
    from datetime import datetime

    from titan.core.jobs import short_ref

    header = [
        "job",
        "backend",
        "name",
        "state",
        "progress",
        "loss",
        "tok/s",
        "ETA",
        "submitted",
        "detail",
    ]
    rows = []
    for v in views:
        r, p, status = v.record, v.progress, v.status
        step = eta = loss = tps = "-"
        if p is not None:
            step = f"step {p.step}" + (f"/{p.total_steps}" if p.total_steps else "")
            loss = f"{p.loss:.4f}" if p.loss is not None else "-"
            tps = f"{p.tokens_per_second:,.0f}" if p.tokens_per_second is not None else "-"
            if p.eta_seconds is not None and not status.final:
                s = int(p.eta_seconds)
                eta = f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
        elif v.progress_error:
            step = "?"
        try:
            when = datetime.fromisoformat(r.submitted.replace("Z", "+00:00"))
            submitted = when.astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            submitted = r.submitted
        cells = [short_ref(r, records), r.backend, r.name, status.state, step, loss, tps, eta]
        cells += [submitted, status.detail]
        rows.append([" ".join(str(c).split()) for c in cells])  # one line per cell
    return header, rows


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if h in _RIGHT else c.ljust(w)
            for h, c, w in zip(header, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _prune(store) -> None:
    from titan.core.job_queries import query_jobs

    views = query_jobs(store.all(), _backend_registry(), progress=False)
    kept = [v for v in views if not v.status.final]
    for v in views:
        if v.status.final:
            store.remove(v.record)
            print(f"forgot {v.record.full_ref} ({v.record.name}): {v.status}")
    unknown = sum(v.status.state == "UNKNOWN" for v in kept)
    print(
        f"removed {len(views) - len(kept)} record(s) of ended jobs; kept {len(kept)}"
        + (f" ({unknown} whose state could not be asked)" if unknown else "")
        + "; nothing on the clusters or in the dump folders was touched"
    )


_JOB_ARG = Annotated[
    str,
    typer.Argument(
        metavar="JOB",
        help="Job id, name, BACKEND:ID or BACKEND:CLUSTER/ID (as `titan jobs` shows it).",
    ),
]


def job_logs(
    job_ref: _JOB_ARG,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep following until the job ends.")
    ] = False,
) -> None:
    """Show a job's log; with -f, follow it to the end and exit with the job's result."""
    from titan.core.jobs import job_store

    record = job_store().find(job_ref)
    code = _backend_registry().cluster(record.backend).logs(record, follow, sys.stdout)
    if code:
        raise typer.Exit(code)


def job_cancel(job_ref: _JOB_ARG) -> None:
    """Cancel a job titan launched; says what state it is in after the request (a job that
    had already ended is left as it was)."""
    from titan.core.job_queries import query_jobs
    from titan.core.jobs import FINAL_STATES, JobStatus, as_status, job_store

    record = job_store().find(job_ref)
    registry = _backend_registry()
    answer = registry.cluster(record.backend).cancel(record)
    who = f"{record.full_ref} ({record.name})"
    if answer is None:  # a backend written before cancel returned a status: ask it
        status = query_jobs([record], registry, progress=False)[0].status
        if status.final and status.state not in ("CANCELLED", "STOPPED"):
            detail = status.detail or "it had already ended; nothing to cancel"
            status = JobStatus(status.state, detail)
        elif status.state not in FINAL_STATES:
            console.print(f"cancelled {escape(who)}", highlight=False)
            return
    else:
        status = as_status(answer)
    line = escape(str(status))
    if status.state in ("CANCELLED", "STOPPED", "STOPPING"):
        console.print(f"cancelled {escape(who)}: {line}", highlight=False)
    elif status.final:
        console.print(f"not cancelled: {escape(who)} had already ended: {line}", highlight=False)
    elif status.state == "UNKNOWN":
        console.print(f"{escape(who)}: {line}", highlight=False)
        raise typer.Exit(1)
    else:
        console.print(
            f"cancel requested for {escape(who)}; it is {line}; `titan jobs` shows when it "
            "has stopped",
            highlight=False,
        )


def job_forget(job_ref: _JOB_ARG) -> None:
    from titan.core.jobs import job_store

    store = job_store()
    record = store.find(job_ref)
    removed = store.remove(record)
    print(
        f"forgot {record.full_ref} ({record.name}): removed {', '.join(map(str, removed))}; "
        f"nothing on the cluster or in {record.dump_folder} was touched"
    )


def register(app: typer.Typer) -> None:
    """Add the job commands to ``app``."""
    app.command("jobs")(jobs_list)
    app.command("logs")(job_logs)
    app.command("cancel")(job_cancel)
    app.command(
        "forget",
        help="Remove one job's record from `titan jobs`, whatever its state. " + _RECORDS_ONLY,
    )(job_forget)
