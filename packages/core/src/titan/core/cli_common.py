"""What the ``titan`` command modules share: the consoles, the ``--plugins`` option, and
turning a command line's CONFIG.toml and ``--section.key=value`` overrides into a job.

A module of its own so that the command modules (:mod:`titan.core.cli`,
:mod:`titan.core.cli_jobs`, :mod:`titan.core.cli_inspect`, and plugins' commands) use it
without importing each other. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from titan.core.config.overrides import parse_overrides

console = Console(stderr=True, soft_wrap=True)
out = Console()

WIDE = 120
"""Columns from which listings are tables (narrower: one block per item)."""

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
"""Context settings of a command that takes ``--section.key=value`` overrides."""

PluginsOpt = Annotated[
    str,
    typer.Option(
        "--plugins",
        "-p",
        help="Comma-separated plugins to activate, e.g. compile,fp8,fp8-ag; no:NAME blocks one.",
    ),
]


def split_args(args: list[str]) -> tuple[Path | None, list[tuple[str, str]]]:
    """Separate the optional CONFIG.toml positional from ``--section.key=value`` overrides."""
    config: Path | None = None
    rest = list(args)
    if rest and not rest[0].startswith("-"):
        config = Path(rest.pop(0))
    return config, parse_overrides(rest)


def check_options(ctx: typer.Context) -> None:
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


def plugin_list(plugins: str) -> list[str]:
    return [p.strip() for p in plugins.split(",") if p.strip()]


def prepare(
    ctx: typer.Context,
    plugins: str,
    extra: list[tuple[str, str]] | None = None,
    validate: bool = True,
    show_notes: bool = True,
):
    from titan.core.launch import prepare_job

    check_options(ctx)
    config_path, overrides = split_args(ctx.args)
    job = prepare_job(
        config_path, plugin_list(plugins), [*overrides, *(extra or [])], validate=validate
    )
    if show_notes:
        print_notes(job)
    return job


def print_notes(job) -> None:
    layout_notes = job.layout.notes if job.layout is not None else ()
    for note in [*job.config.notes, *job.plugins.notes, *layout_notes]:
        console.print(f"[dim]note:[/] {escape(note)}")
