"""The ``titan`` command (Typer + rich).

Kept torch-free at import time: ``titan --help`` and ``titan plugins list``
must answer in well under a second. Commands that train or build models
import torch inside their function bodies, through the backends and the
trainer.

This module holds the app, ``titan run`` and the entry point (:func:`main`: one line per
user error); the job commands are in :mod:`titan.core.cli_jobs`, the listings in
:mod:`titan.core.cli_inspect`, and what they share in :mod:`titan.core.cli_common`.
Plugins add their own commands through ``titan_add_commands``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from titan.core import __version__, cli_inspect, cli_jobs
from titan.core.cli_common import EXTRA_ARGS, PluginsOpt, console, out, prepare, print_notes
from titan.core.errors import TitanError

app = typer.Typer(
    name="titan",
    help="Pre-train Llama 2/3-class models with native PyTorch. Optimizations are plugins, "
    "places to run are backends.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: rich help formatting costs ~0.3 s per start
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


@app.command(
    context_settings=EXTRA_ARGS, options_metavar="[CONFIG.toml] [OPTIONS] [--section.key=value ...]"
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
    job = prepare(ctx, plugins, extra=extra, validate=False, show_notes=False)
    chosen = job.backends.get(backend)
    from titan.core.checks import check_job

    # Before anything is written, uploaded or submitted, for every backend: a mistake is
    # then the only line printed (exit 2).
    check_job(job, job.backends.layout(chosen, job, offline=dry_run))
    print_notes(job)
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


cli_jobs.register(app)
cli_inspect.register(app)

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
