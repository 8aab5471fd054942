"""The ``titan config``, ``plugins``, ``models`` and ``backends`` commands: what is
installed and what a config becomes, without running anything.

Each listing names the plugin that registered what it shows. Torch-free: these answer
on a laptop in well under a second (``tests/core/test_cli_end_to_end.py`` checks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from titan.core.cli_common import (
    EXTRA_ARGS,
    WIDE,
    PluginsOpt,
    console,
    out,
    plugin_list,
    prepare,
)

config_app = typer.Typer(help="Inspect the job config.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect model families and flavors.", no_args_is_help=True)
backends_app = typer.Typer(help="Inspect launch backends.", no_args_is_help=True)


@config_app.command(
    "show",
    context_settings=EXTRA_ARGS,
    options_metavar="[CONFIG.toml] [OPTIONS] [--section.key=value ...]",
)
def config_show(ctx: typer.Context, plugins: PluginsOpt = "") -> None:
    """Print the merged, effective config as TOML (defaults + file + overrides).

    Names and types are checked; whether files exist and plugins agree is
    left to `titan run` (use --dry-run), so a cluster's config can be read anywhere.
    """
    job = prepare(ctx, plugins, validate=False)
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
    host.activate([p for p in plugin_list(plugins) if p not in host.broken])
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
    if out.size.width >= WIDE:
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
    before = set(entries(registry))
    for plugin, _ in host.call_each(hook, registry=registry):  # one plugin at a time
        for key, entry in entries(registry).items():
            if key not in before:
                owners[key] = (entry, plugin)
        before = set(entries(registry))
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


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def register(app: typer.Typer) -> None:
    """Add the ``config``, ``plugins``, ``models`` and ``backends`` groups to ``app``."""
    app.add_typer(config_app, name="config")
    app.add_typer(plugins_app, name="plugins")
    app.add_typer(models_app, name="models")
    app.add_typer(backends_app, name="backends")
