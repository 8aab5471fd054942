"""The ``titan`` command (Typer + rich).

Kept torch-free at import time: ``titan --help`` and ``titan plugins list``
must answer in well under a second. Commands that train or build models
import torch inside their function bodies, through the backends and the
trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")
app.add_typer(models_app, name="models")

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


def _plugin_list(plugins: str) -> list[str]:
    return [p.strip() for p in plugins.split(",") if p.strip()]


def _prepare(
    ctx: typer.Context,
    plugins: str,
    extra: list[tuple[str, str]] | None = None,
    validate: bool = True,
):
    from titan.core.launch import prepare_job

    config_path, overrides = split_args(ctx.args)
    job = prepare_job(
        config_path, _plugin_list(plugins), [*overrides, *(extra or [])], validate=validate
    )
    for note in [*job.config.notes, *job.plugins.notes]:
        console.print(f"[dim]note:[/] {escape(note)}")
    return job


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
    job = _prepare(ctx, plugins, extra=extra)
    chosen = job.backends.get(backend)
    active = ", ".join(sorted(n for n in job.plugins.active if not job.plugins.infos[n].autoload))
    console.print(
        f"[bold]titan[/] {job.config.model.name}/{job.config.model.flavor} "
        f"backend={chosen.name} plugins={escape(active or '(none)')} dump_folder={job.dump_folder}"
    )
    code = chosen.launch(job, dry_run=dry_run, wait=wait)
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
            becomes = f"refused unless off/1 ({a.note})"
        elif a.ignore:
            becomes = f"ignored ({a.note})"
        else:
            becomes = " and ".join(
                x
                for x in (
                    a.target and f"{a.target}",
                    a.activates and f"activates plugin '{a.activates}' when true",
                )
                if x
            )
        table.add_row(a.source, escape(becomes))
    out.print(table)


@plugins_app.command("list")
def plugins_list(plugins: PluginsOpt = "") -> None:
    """Every installed plugin: distribution, version, hooks, and whether it is active."""
    from titan.core.plugins import load_plugins

    host = load_plugins()
    host.activate(_plugin_list(plugins))
    table = Table(title="titan plugins (entry point group 'titan.plugins')")
    for col in ("plugin", "active", "distribution", "version", "hooks", "description"):
        table.add_column(col, overflow="fold")
    for name, info in sorted(host.infos.items()):
        if name in host.active:
            state = "yes (auto)" if info.autoload else "yes"
        else:
            state = "blocked" if info.autoload else "opt-in"
        hooks = ", ".join(h.removeprefix("titan_") for h in info.hooks)
        table.add_row(name, state, info.distribution, info.version, hooks, info.description)
    out.print(table)
    for note in host.notes:
        console.print(f"[dim]note:[/] {escape(note)}")


@models_app.command("list")
def models_list() -> None:
    """Model families and flavors, with parameter counts computed on the meta device."""
    from titan.core.plugins import load_plugins
    from titan.core.registry import ModelRegistry

    host = load_plugins()
    registry = ModelRegistry()
    host.pm.hook.titan_register_models(registry=registry)
    from titan.core.model_info import count_parameters

    table = Table(title="titan models")
    for col in ("model", "flavor", "parameters", "dim", "layers", "heads", "kv heads", "vocab"):
        table.add_column(col, justify="right" if col not in ("model", "flavor") else "left")
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
            )
    out.print(table)


def _backend_registry():
    """Installed backends (registration hooks only: no config, no torch)."""
    from titan.core.plugins import load_plugins
    from titan.core.registry import BackendRegistry

    registry = BackendRegistry()
    load_plugins().pm.hook.titan_register_backends(registry=registry)
    return registry


@app.command("jobs")
def jobs_list(
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Show the newest N jobs.", min=1)
    ] = 20,
) -> None:
    """The jobs titan launched on clusters (Slurm, SageMaker, ...), newest first, with their state."""
    from titan.core.jobs import job_store

    records = job_store().all()[:limit]
    if not records:
        console.print("no jobs yet: `titan run --backend slurm|sagemaker ...` launches one")
        return
    registry = _backend_registry()
    table = Table(title="titan jobs")
    for col in ("job", "backend", "name", "state", "submitted", "dump folder"):
        table.add_column(col, overflow="fold")
    for r in records:
        try:
            state = registry.cluster(r.backend).state(r)
        except TitanError as exc:
            state = f"UNKNOWN ({exc})"
        table.add_row(r.id, r.backend, r.name, state, r.submitted, r.dump_folder)
    out.print(table)


@app.command("logs")
def job_logs(
    job_ref: Annotated[str, typer.Argument(metavar="JOB", help="Job id (or BACKEND:ID).")],
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
def job_cancel(
    job_ref: Annotated[str, typer.Argument(metavar="JOB", help="Job id (or BACKEND:ID).")],
) -> None:
    """Cancel a job titan launched."""
    from titan.core.jobs import job_store

    record = job_store().find(job_ref)
    _backend_registry().cluster(record.backend).cancel(record)
    console.print(f"cancelled {record.ref} ({record.name})")


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _add_plugin_commands() -> None:
    """Let plugins add sub-commands (titan_add_commands); a broken plugin must not break --help."""
    from titan.core.plugins import load_plugins

    try:
        load_plugins().pm.hook.titan_add_commands(app=app)
    except TitanError as exc:
        console.print(f"[yellow]warning:[/] {escape(str(exc))}")


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    _add_plugin_commands()
    try:
        code = app(standalone_mode=False)
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
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
