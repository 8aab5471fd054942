"""Discovering, registering and activating plugins (pluggy).

Every plugin, ours and third parties', comes through one door: the
``titan.plugins`` entry-point group. The entry point's name is the plugin's
name; its value is the module holding the ``@hookimpl`` functions. A plugin
module may also set:

* ``AUTOLOAD = True``: active whenever installed (model families, backends,
  metric sinks). Otherwise the plugin is *opt-in*: active only when named in
  ``--plugins`` or in the config's ``[plugins] enabled`` list.
* ``REQUIRES = ("fp8",)``: plugins activated together with this one.

``no:NAME`` in the plugin list blocks a plugin, autoloaded ones included
(as ``-p no:NAME`` does in pytest).

All installed plugins are *registered*, because registration hooks describe
what exists: model families, config sections, torchtitan aliases. Only
*active* plugins take part in validation, build and training hooks:
:meth:`PluginHost.hook` hides the others.

Before registering a plugin, titan checks its module: every function named
``titan_*`` must be marked ``@hookimpl``, name a hook titan defines (a
misspelling gets a "did you mean"), and take only arguments that hook passes.
A plugin that fails these checks, or fails to import, is *broken*: it is not
registered, ``titan`` warns about it once (naming the plugin, its
distribution and the fix), and only a run that activates it stops with that
message. Runs that do not use it are unaffected.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from titan.core import PROJECT_NAME, hookspecs
from titan.core.errors import PluginError

ENTRY_POINT_GROUP = "titan.plugins"

# Hooks every installed plugin answers; the rest only reach active plugins.
REGISTRATION_HOOKS = frozenset(
    {
        "titan_register_models",
        "titan_register_backends",
        "titan_config_sections",
        "titan_config_aliases",
        "titan_add_commands",
    }
)


@dataclass(frozen=True)
class PluginInfo:
    """What ``titan plugins list`` shows about one installed plugin."""

    name: str
    module: str
    distribution: str
    version: str
    autoload: bool
    requires: tuple[str, ...]
    description: str
    hooks: tuple[str, ...] = ()


@dataclass
class PluginHost:
    """The pluggy manager plus the set of active plugins.

    ``broken`` maps the name of each installed plugin that could not be
    registered to the one-line message that says why and how to fix it;
    its ``infos`` entry is there too, with no hooks.
    """

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo]
    active: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)
    _callers: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- activation ---------------------------------------------------------

    def activate(self, requested: Iterable[str]) -> frozenset[str]:
        """Activate autoload plugins plus ``requested`` (and what they require).

        ``no:NAME`` entries block a plugin. Unknown names are an error that
        lists the available plugins. Returns the active set.
        """
        requested = [r.strip() for r in requested if r and r.strip()]
        self.notes = []  # they describe this activation only
        blocked = {r[3:] for r in requested if r.startswith("no:")}
        wanted = [r for r in requested if not r.startswith("no:")]
        for name in [*blocked, *wanted]:
            self._check_known(name)
        active: set[str] = {n for n, i in self.infos.items() if i.autoload} - blocked
        queue = list(wanted)
        while queue:
            name = queue.pop(0)
            if name in blocked:
                raise PluginError(
                    f"plugin '{name}' is both requested and blocked (no:{name}); remove one of them"
                )
            if name in active:
                continue
            active.add(name)
            for req in self.infos[name].requires:
                self._check_known(req, needed_by=name)
                if req not in active and req not in wanted:
                    self.notes.append(f"plugin '{name}' needs '{req}': activated it too")
                queue.append(req)
        for name in sorted(active & set(self.broken)):
            fix = f"; or block it with --plugins no:{name}" if self.infos[name].autoload else ""
            raise PluginError(self.broken[name] + fix)
        self.active = frozenset(active)
        self._callers.clear()
        return self.active

    def _check_known(self, name: str, needed_by: str | None = None) -> None:
        if name in self.infos:
            return
        available = ", ".join(sorted(self.infos)) or "none"
        close = difflib.get_close_matches(name, list(self.infos), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        who = f", needed by plugin '{needed_by}'," if needed_by else ""
        raise PluginError(
            f"unknown plugin '{name}'{who}{hint}; available plugins: {available}"
            " (install a package that provides it, or fix the name in --plugins)"
        )

    # -- hook calls ----------------------------------------------------------

    @property
    def hook(self) -> _ActiveHooks:
        """Hook callers that reach active plugins only (registration hooks reach all)."""
        return _ActiveHooks(self)

    def module(self, name: str) -> ModuleType:
        return self.pm.get_plugin(name)

    def call_each(
        self, name: str, installed: bool = False, **kwargs: Any
    ) -> Iterator[tuple[str, Any]]:
        """``(plugin, result)``: hook ``name`` called plugin by plugin, in pluggy's order.

        A generator: each plugin is called when the caller asks for its answer, so a
        caller can see what that one plugin changed (a registry) before the next runs.
        For the few calls whose results must name the plugin that gave them (a
        checkpoint-state name taken twice, the plugin that registered a model).
        Each call still goes through pluggy (a hook caller reduced to one
        plugin), so tracing and hook-call monitoring see it like any other.
        Registration hooks reach every installed plugin, the others active ones, or
        every installed plugin with ``installed=True`` (to name the inactive plugin that
        would answer, in an error).
        """
        caller = getattr(self.pm.hook, name) if installed else getattr(self.hook, name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            others = [p for p in self.pm.get_plugins() if p is not impl.plugin]
            only = self.pm.subset_hook_caller(name, remove_plugins=others)
            answer = only(**kwargs)  # a list (None answers left out), or one value (firstresult)
            first = caller.spec is not None and caller.spec.opts.get("firstresult", False)
            yield impl.plugin_name, answer if first else (answer[0] if answer else None)


class _ActiveHooks:
    def __init__(self, host: PluginHost) -> None:
        self._host = host

    def __getattr__(self, name: str) -> Any:
        host = self._host
        if name in REGISTRATION_HOOKS:
            return getattr(host.pm.hook, name)
        caller = host._callers.get(name)
        if caller is None:
            inactive = [host.pm.get_plugin(n) for n in host.infos if n not in host.active]
            caller = host.pm.subset_hook_caller(name, remove_plugins=[p for p in inactive if p])
            host._callers[name] = caller
        return caller


def _who(name: str, dist: str, version: str) -> str:
    return f"plugin '{name}' (distribution {dist} {version})"


def _load_module(name: str, value: str, dist: str, version: str) -> ModuleType | str:
    """The plugin's module, or the message saying why it cannot be imported."""
    try:
        return importlib.import_module(value)
    except Exception as exc:  # a broken third-party package must not look like our bug
        return (
            f"{_who(name, dist, version)} failed to import {value}: "
            f"{type(exc).__name__}: {_one_line(exc)}; fix or reinstall {dist}, or uninstall it"
        )


_IMPL_MARK = f"{PROJECT_NAME}_impl"  # the attribute pluggy's @hookimpl sets on a function


def _spec_args() -> dict[str, tuple[str, ...]]:
    """Each hook titan defines, with the argument names it passes."""
    return {
        n: tuple(inspect.signature(f).parameters)
        for n, f in vars(hookspecs).items()
        if n.startswith(f"{PROJECT_NAME}_") and inspect.isfunction(f)
    }


def hook_problems(module: ModuleType) -> list[str]:
    """What is wrong with the ``titan_*`` functions of a plugin module (empty: nothing).

    Checks what pluggy would only report later, or not at all: a function
    not marked ``@hookimpl`` is silently ignored by pluggy, and an unknown
    hook name only fails at ``check_pending``, without the plugin's name.
    """
    specs = _spec_args()
    problems = []
    for attr, fn in sorted(vars(module).items()):
        if not attr.startswith(f"{PROJECT_NAME}_") or not inspect.isfunction(fn):
            continue
        marked = hasattr(fn, _IMPL_MARK)
        if attr not in specs:
            # Compared without the shared "titan_" prefix, which alone would make any two
            # names look alike (titan_on_lunch_break ~ titan_configure).
            prefix = f"{PROJECT_NAME}_"
            stems = {spec.removeprefix(prefix): spec for spec in specs}
            close = difflib.get_close_matches(attr.removeprefix(prefix), list(stems), n=1)
            hint = f" (did you mean {stems[close[0]]}?)" if close else ""
            problems.append(f"{attr} is not a titan hook{hint}")
        elif not marked:
            problems.append(
                f"{attr} is not marked @hookimpl (add `from titan.core import hookimpl` and "
                "decorate it)"
            )
        else:
            extra = [a for a in inspect.signature(fn).parameters if a not in specs[attr]]
            if extra:
                problems.append(
                    f"{attr} takes {', '.join(repr(a) for a in extra)}, which the hook does not "
                    f"pass (it passes: {', '.join(specs[attr]) or 'nothing'})"
                )
    return problems


_WARNED_ENV = "TITAN_BROKEN_PLUGINS_REPORTED"


def _warn_once(name: str, message: str) -> None:
    """One warning per broken plugin per command, however many times plugins are loaded.

    The names already reported travel in the environment, so the ranks a
    backend starts from this process do not repeat them.
    """
    reported = set(filter(None, os.environ.get(_WARNED_ENV, "").split(",")))
    if name in reported:
        return
    os.environ[_WARNED_ENV] = ",".join(sorted(reported | {name}))
    print(f"warning: {message} (it stays inactive)", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _describe(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else ""


#: How many times this process scanned the ``titan.plugins`` entry points (a test counts it).
DISCOVERIES = 0
_discovered: tuple[Any, pluggy.PluginManager, dict[str, PluginInfo], dict[str, str]] | None = None


def load_plugins() -> PluginHost:
    """Every installed plugin, registered and checked; a new host with nothing active.

    The entry points are scanned and the plugin modules imported and checked once per
    process (``titan run`` asks from the CLI, the launch, the model registry and the
    trainer); every call returns a new :class:`PluginHost` over the same registrations,
    so what one caller activates does not leak into another's. Call
    :meth:`PluginHost.activate` on it. A process that installs a plugin after the first
    call calls :func:`forget_discovered_plugins` first.
    """
    global _discovered
    if _discovered is None or _discovered[0] is not entry_points:  # re-pointed (tests)
        _discovered = (entry_points, *_discover())
    _, pm, infos, broken = _discovered
    return PluginHost(pm=pm, infos=infos, broken=dict(broken))


def forget_discovered_plugins() -> None:
    """Scan the entry points again at the next :func:`load_plugins` (a plugin was installed)."""
    global _discovered
    _discovered = None


def _discover() -> tuple[pluggy.PluginManager, dict[str, PluginInfo], dict[str, str]]:
    """Scan the entry points, import each plugin module, check and register its hooks."""
    global DISCOVERIES
    DISCOVERIES += 1
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    broken: dict[str, str] = {}
    seen: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        ver = ep.dist.version if ep.dist else "?"
        if ep.name in seen:
            if seen[ep.name] == ep.value:  # the same module seen twice on sys.path
                continue
            raise PluginError(
                f"two installed plugins are called '{ep.name}' ({seen[ep.name]} and {ep.value}); "
                "uninstall one of them"
            )
        seen[ep.name] = ep.value
        loaded = _load_module(ep.name, ep.value, dist, ver)
        module = loaded if isinstance(loaded, ModuleType) else None
        infos[ep.name] = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist,
            version=ver,
            autoload=bool(getattr(module, "AUTOLOAD", False)),
            requires=tuple(getattr(module, "REQUIRES", ())),
            description=_describe(module) if module else "",
        )
        if module is None:
            broken[ep.name] = str(loaded)
            continue
        problems = hook_problems(module)
        if not problems:
            try:
                pm.register(module, name=ep.name)
            except pluggy.PluginValidationError as exc:
                problems = [_one_line(exc)]
        if problems:
            broken[ep.name] = (
                f"{_who(ep.name, dist, ver)}, module {ep.value}: {'; '.join(problems)}; "
                f"fix the plugin (hooks: docs/plugins.md) or uninstall {dist}"
            )
    pm.check_pending()  # cannot fail: every registered function was checked above
    for name, info in list(infos.items()):
        plugin = pm.get_plugin(name)
        hooks = tuple(sorted(c.name for c in pm.get_hookcallers(plugin) or ())) if plugin else ()
        infos[name] = PluginInfo(**{**info.__dict__, "hooks": hooks})
    for name, message in broken.items():
        _warn_once(name, message)
    return pm, infos, broken
