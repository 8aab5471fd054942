"""The ``titan`` command (Typer + rich).

Kept torch-free at import time: ``titan --help`` and ``titan plugins list``
must answer in well under a second. Commands that train or build models
import torch inside their function bodies, through the backends and the
trainer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from titan.core import __version__
from titan.core.config.job import parse_overrides
from titan.core.errors import TitanError

console = Console(stderr=True, soft_wrap=True)
out = Console()

app = typer.Typer(
    name="titan",
    help="Pre-train Llama 2/3-class models with native PyTorch. Optimizations are plugins, "
    "places to run are backends.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: rich help formatting costs ~0.3 s per start
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the job config.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect model families and flavors.", no_args_is_help=True)
backends_app = typer.Typer(help="Inspect launch backends.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")
app.add_typer(models_app, name="models")
app.add_typer(backends_app, name="backends")

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
PluginsOpt = Annotated[
    str,
    typer.Option(
        "--plugins",
        "-p",
        help="Comma-separated plugins to activate, e.g. compile,fp8,fp8-ag; no:NAME blocks one.",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"titan {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """titan: every optimization a plugin, every place a job can run a backend."""


def split_args(args: list[str]) -> tuple[Path | None, list[tuple[str, str]]]:
    """Separate the optional CONFIG.toml positional from ``--section.key=value`` overrides."""
    config: Path | None = None
    rest = list(args)
    if rest and not rest[0].startswith("-"):
        config = Path(rest.pop(0))
    return config, parse_overrides(rest)


def _check_options(ctx: typer.Context) -> None:
    """A misspelled option (``--nprocs``) is not a config override: say which option was meant.

    Commands that take ``--section.key=value`` overrides accept unknown options
    (click passes them on in ``ctx.args``); a name without a dot cannot be one.
    """
    import difflib

    from titan.core.errors import ConfigError

    options = sorted({o for p in ctx.command.params for o in p.opts if o.startswith("--")})
    for arg in ctx.args:
        name = arg.split("=", 1)[0]
        if name.startswith("-") and "." not in name:
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"{ctx.command_path}: no such option '{name}'; {hint}the options are "
                f"{', '.join(options)}, and config overrides look like --section.key=value"
            )


def _plugin_list(plugins: str) -> list[str]:
    return [p.strip() for p in plugins.split(",") if p.strip()]


def _prepare(
    ctx: typer.Context,
    plugins: str,
    extra: list[tuple[str, str]] | None = None,
    validate: bool = True,
    show_notes: bool = True,
):
    from titan.core.launch import prepare_job

    _check_options(ctx)
    config_path, overrides = split_args(ctx.args)
    job = prepare_job(
        config_path, _plugin_list(plugins), [*overrides, *(extra or [])], validate=validate
    )
    if show_notes:
        _print_notes(job)
    return job


def _print_notes(job) -> None:
    layout_notes = job.layout.notes if job.layout is not None else ()
    for note in [*job.config.notes, *job.plugins.notes, *layout_notes]:
        console.print(f"[dim]note:[/] {escape(note)}")


@app.command(
    context_settings=_EXTRA, options_metavar="[CONFIG.toml] [OPTIONS] [--section.key=value ...]"
)
def run(
    ctx: typer.Context,
    plugins: PluginsOpt = "",
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="Where to run: local, slurm, sagemaker, ...")
    ] = "local",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be launched, launch nothing.")
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", help="Processes per machine (default: GPUs, or 1 on CPU).", min=1),
    ] = None,
    nnodes: Annotated[int | None, typer.Option("--nnodes", help="Machines.", min=1)] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Cluster backends: follow the job's log to its end and exit with its result.",
        ),
    ] = False,
) -> None:
    """Train. With no CONFIG, the Llama 3 debug model on the bundled corpus, on this machine.

    Any config key can be overridden: --training.steps=20 --optimizer.lr=3e-4.
    """
    extra = [("launch.nproc_per_node", str(nproc))] if nproc else []
    extra += [("launch.nnodes", str(nnodes))] if nnodes else []
    job = _prepare(ctx, plugins, extra=extra, validate=False, show_notes=False)
    chosen = job.backends.get(backend)
    from titan.core.checks import check_job

    # Before anything is written, uploaded or submitted, for every backend: a mistake is
    # then the only line printed (exit 2).
    check_job(job, job.backends.layout(chosen, job, offline=dry_run))
    _print_notes(job)
    if dry_run and job.layout is not None and job.layout.device.memory_bytes:
        from titan.core.checks import plannable
        from titan.core.speed_plan import plan_line

        if plannable(job):
            console.print(escape(plan_line(job, job.layout)))
    active = ", ".join(sorted(n for n in job.plugins.active if not job.plugins.infos[n].autoload))
    console.print(
        f"[bold]titan[/] {job.config.model.name}/{job.config.model.flavor} "
        f"backend={chosen.name} plugins={escape(active or '(none)')} dump_folder={job.dump_folder}"
    )
    # ``wait`` only when asked: a backend written before --wait existed still launches.
    code = chosen.launch(job, dry_run=dry_run, **({"wait": True} if wait else {}))
    if code:
        raise typer.Exit(code)


@config_app.command(
    "show",
    context_settings=_EXTRA,
    options_metavar="[CONFIG.toml] [OPTIONS] [--section.key=value ...]",
)
def config_show(ctx: typer.Context, plugins: PluginsOpt = "") -> None:
    """Print the merged, effective config as TOML (defaults + file + overrides).

    Names and types are checked; whether files exist and plugins agree is
    left to `titan run` (use --dry-run), so a cluster's config can be read anywhere.
    """
    job = _prepare(ctx, plugins, validate=False)
    sys.stdout.write(job.effective_toml())


@config_app.command("aliases")
def config_aliases() -> None:
    """The torchtitan keys titan accepts and what each becomes (see docs/torchtitan.md)."""
    from titan.core.launch import collect_schema
    from titan.core.plugins import load_plugins

    _, aliases = collect_schema(load_plugins())
    table = Table(title="torchtitan keys accepted by titan")
    for col in ("torchtitan key", "becomes"):
        table.add_column(col)
    for a in sorted(aliases, key=lambda a: a.source):
        if a.unsupported:
            becomes = f"accepted while off/1; otherwise refused: {a.fix or a.note}"
        elif a.ignore:
            becomes = f"ignored ({a.note})"
        elif a.item is not None:
            becomes = " and ".join(
                x
                for x in (
                    a.target and f"{a.target} = whether the list holds {a.item!r}",
                    a.activates and f"activates plugin '{a.activates}' when it holds {a.item!r}",
                )
                if x
            )
        else:
            becomes = " and ".join(
                x
                for x in (
                    a.target and f"{a.target}",
                    a.activates
                    and f"activates plugin '{a.activates}' when on (true, or not 'none')",
                )
                if x
            )
        table.add_row(a.source, escape(becomes))
    from titan.core.config.aliases import VALUE_ALIASES

    for (key, value), titan_value in sorted(VALUE_ALIASES.items()):
        table.add_row(f"{key} = {value!r}", escape(f"{key} = {titan_value!r}"))
    out.print(table)
    out.print(
        "The torchtitan release a file comes from is told by its keys (`titan config show` "
        "says which); 2024 files get that era's LR schedule, lr_scheduler.formula = "
        "'torchtitan_2024'. See docs/torchtitan.md."
    )


@plugins_app.command("list")
def plugins_list(plugins: PluginsOpt = "") -> None:
    """Every installed plugin: distribution, version, hooks, and whether it is active."""
    from titan.core.plugins import load_plugins

    host = load_plugins()
    host.activate([p for p in _plugin_list(plugins) if p not in host.broken])
    rows = []
    for name, info in sorted(host.infos.items()):
        if name in host.broken:
            state = "broken"
        elif name in host.active:
            state = "yes (auto)" if info.autoload else "yes"
        else:
            state = "blocked" if info.autoload else "opt-in"
        hooks = ", ".join(h.removeprefix("titan_") for h in info.hooks)
        rows.append((name, state, info.distribution, info.version, hooks, info.description))
    title = "titan plugins (entry point group 'titan.plugins')"
    if out.size.width >= _WIDE:
        table = Table(title=title)
        for col in ("plugin", "active", "distribution", "version", "hooks", "description"):
            table.add_column(col, no_wrap=col not in ("hooks", "description"))
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        out.print(table)
    else:  # one block per plugin: long names and hook lists wrap between words, not inside
        out.print(f"[bold]{escape(title)}[/]")
        for name, state, dist, version, hooks, description in rows:
            out.print(f"\n[bold]{escape(name)}[/]  {state}  {escape(dist)} {escape(version)}")
            for text in (description, f"hooks: {hooks or '-'}"):
                out.print(Padding(Text(text), (0, 0, 0, 2)))
    for name in sorted(host.broken):
        console.print(f"[yellow]broken:[/] {escape(host.broken[name])}")
    for note in host.notes:
        console.print(f"[dim]note:[/] {escape(note)}")


_WIDE = 120  # columns from which `plugins list` is a table (narrower: one block per plugin)


@backends_app.command("list")
def backends_list() -> None:
    """Launch backends (`titan run --backend NAME`) and the plugin that provides each."""
    from titan.core.plugins import load_plugins
    from titan.core.registry import BackendRegistry

    host = load_plugins()
    owners = _registered_by(
        host, "titan_register_backends", BackendRegistry(), lambda r: dict(r.backends)
    )
    table = Table(title="titan backends")
    for col in ("backend", "plugin", "distribution", "description"):
        table.add_column(col, no_wrap=col != "description")
    for name, (backend, plugin) in sorted(owners.items()):
        info = host.infos[plugin]
        dist = f"{info.distribution} {info.version}"
        table.add_row(name, plugin, escape(dist), escape(getattr(backend, "description", "")))
    out.print(table)


def _registered_by(host, hook: str, registry: Any, entries: Callable[[Any], dict]) -> dict:
    """``{key: (entry, plugin)}``: what each plugin's registration hook added, and who added it.

    The plugins' hooks are called one by one on ``registry``, in pluggy's order, so a
    plugin that extends another's entry (a flavor added to a family) is credited for
    what it adds. A broken plugin is not registered, so it adds nothing.
    """
    owners: dict = {}
    for impl in reversed(getattr(host.pm.hook, hook).get_hookimpls()):  # pluggy's call order
        before = set(entries(registry))
        impl.function(*[{"registry": registry}[a] for a in impl.argnames])
        for key, entry in entries(registry).items():
            if key not in before:
                owners[key] = (entry, impl.plugin_name)
    return owners


@models_app.command("list")
def models_list() -> None:
    """Model families and flavors, with parameter counts computed from their shapes.

    Families and flavors of every installed plugin, titan's and third parties', with the
    plugin that registered each.
    """
    from titan.core.plugins import load_plugins
    from titan.core.registry import ModelRegistry

    host = load_plugins()
    registry = ModelRegistry()
    owners = _registered_by(
        host,
        "titan_register_models",
        registry,
        lambda r: {(f.name, v): f for f in r.families.values() for v in f.flavors},
    )
    from titan.core.model_info import count_parameters

    table = Table(title="titan models", box=box.SIMPLE_HEAD)  # fits 80 columns
    cols = ("model", "flavor", "params", "dim", "layers", "heads", "kv", "vocab")
    for col in (*cols, "plugin"):
        table.add_column(
            col,
            justify="left" if col in ("model", "flavor", "plugin") else "right",
            no_wrap=True,
        )
    for fam in registry.families.values():
        for flavor, args in fam.flavors.items():
            n = count_parameters(fam, args)
            table.add_row(
                fam.name,
                flavor,
                _human(n),
                *(
                    str(getattr(args, a, ""))
                    for a in ("dim", "n_layers", "n_heads", "kv_heads", "vocab_size")
                ),
                owners[(fam.name, flavor)][1],
            )
    out.print(table)


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


@app.command("jobs")
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
    from titan.core.jobs import job_store, query_jobs

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
    if out.is_terminal and out.size.width >= _WIDE:  # the table, then each job's detail
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
    from titan.core.jobs import query_jobs

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


@app.command("logs")
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


@app.command("cancel")
def job_cancel(job_ref: _JOB_ARG) -> None:
    """Cancel a job titan launched; says what state it is in after the request (a job that
    had already ended is left as it was)."""
    from titan.core.jobs import FINAL_STATES, JobStatus, as_status, job_store, query_jobs

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


@app.command(
    "forget", help="Remove one job's record from `titan jobs`, whatever its state. " + _RECORDS_ONLY
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


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


_plugin_commands_added = False


def _add_plugin_commands() -> None:
    """Let plugins add sub-commands (titan_add_commands); a broken plugin must not break --help."""
    global _plugin_commands_added
    if _plugin_commands_added:  # main() may run several times in one process (tests)
        return
    _plugin_commands_added = True
    from titan.core.plugins import load_plugins

    try:
        load_plugins().pm.hook.titan_add_commands(app=app)
    except TitanError as exc:
        console.print(f"[yellow]warning:[/] {escape(str(exc))}")


def _usage_error_line(exc: Exception) -> str:
    """One line for a command-line parsing error: what is wrong, then how to fix it.

    Click's own report is a usage block, a hint and the error on three lines;
    titan's rule is one line that names the problem and the fix.
    """
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = message.replace("Value error, ", "").strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    if ctx is None:
        return f"{message}; see 'titan --help' (or the command's --help)"
    where = ctx.command_path
    help_hint = f"see '{where} --help'"
    if message.startswith("no such command"):
        commands = sorted(getattr(ctx.command, "commands", {}) or {})
        return f"{where}: {message}; the commands are {', '.join(commands)} ({help_hint})"
    usage = ctx.get_usage().strip().replace("Usage: ", "usage: ", 1)
    return f"{where}: {message}; {' '.join(usage.split())} ({help_hint})"


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """The click exception base classes in use: typer's bundled click, and click if installed.

    typer >= 0.20 raises the exceptions of its own copy of click (all subclasses
    of ``typer.TyperException``); a plugin's command may still use click itself.
    """
    types: list[type[BaseException]] = [typer.TyperException]
    try:
        import click

        types.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line and exit code 2.

    ``argv`` (default: ``sys.argv[1:]``) lets tests run the command in-process
    with the same output and exit code as the console script.
    """
    _add_plugin_commands()
    click_errors = _click_exception_types()
    try:
        code = app(args=argv, prog_name="titan", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TitanError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except click_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `titan` alone: the help is the answer
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        line = _usage_error_line(exc)
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
        sys.exit(2 if getattr(exc, "exit_code", 2) in (1, 2) else exc.exit_code)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
