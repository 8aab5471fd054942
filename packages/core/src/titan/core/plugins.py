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

All installed plugins are *registered* (pluggy validates their hook
implementations then), because registration hooks describe what exists:
model families, config sections, torchtitan aliases. Only *active* plugins
take part in validation, build and training hooks: :meth:`PluginHost.hook`
hides the others.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
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
    """The pluggy manager plus the set of active plugins."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo]
    active: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
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


def _load_module(name: str, value: str, dist: str) -> ModuleType:
    try:
        return importlib.import_module(value)
    except Exception as exc:  # a broken third-party package must not look like our bug
        raise PluginError(
            f"plugin '{name}' (from distribution '{dist}') failed to import {value}: "
            f"{type(exc).__name__}: {_one_line(exc)}; reinstall or uninstall that package"
        ) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _describe(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else ""


def load_plugins() -> PluginHost:
    """Discover every installed plugin, register it, and validate its hooks.

    Nothing is active yet except nothing: call :meth:`PluginHost.activate`.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
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
        module = _load_module(ep.name, ep.value, dist)
        try:
            pm.register(module, name=ep.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin '{ep.name}' (from '{dist}') has an invalid hook: {_one_line(exc)}; "
                "see docs/plugins.md for the hook signatures"
            ) from exc
        infos[ep.name] = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist,
            version=ver,
            autoload=bool(getattr(module, "AUTOLOAD", False)),
            requires=tuple(getattr(module, "REQUIRES", ())),
            description=_describe(module),
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"a plugin implements a hook titan does not define: {_one_line(exc)}; "
            "check the hook name against docs/plugins.md"
        ) from exc
    for name, info in list(infos.items()):
        hooks = tuple(sorted(c.name for c in pm.get_hookcallers(pm.get_plugin(name)) or ()))
        infos[name] = PluginInfo(**{**info.__dict__, "hooks": hooks})
    return PluginHost(pm=pm, infos=infos)
