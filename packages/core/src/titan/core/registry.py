"""Registries that plugins fill: model families and launch backends.

Both are torch-free: a model family names its builder as an import string
(``"pkg.module:function"``), imported only when a model is actually built,
so ``titan models list`` and ``titan --help`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from titan.core.errors import ConfigError

if TYPE_CHECKING:
    from titan.core.launch import Job


def import_object(path: str) -> Any:
    """``"package.module:attr"`` -> the attribute."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _unknown(kind: str, name: str, known: list[str], fix: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"unknown {kind} '{name}'; {hint}available: {', '.join(known)} ({fix})")


@dataclass
class ModelFamily:
    """A model family: named flavors (hyper-parameter sets) and how to build one.

    ``flavors`` maps a flavor name to its args object (any dataclass the
    builder understands). ``builder`` is ``"module:callable"``; calling it
    with the args returns an ``nn.Module`` that has ``init_weights()``.
    """

    name: str
    flavors: dict[str, Any]
    builder: str
    description: str = ""

    def build(self, args: Any) -> Any:
        return import_object(self.builder)(args)

    def flavor(self, name: str) -> Any:
        if name not in self.flavors:
            raise _unknown(
                f"flavor for model '{self.name}'",
                name,
                list(self.flavors),
                "set model.flavor",
            )
        return self.flavors[name]


@dataclass
class ModelRegistry:
    families: dict[str, ModelFamily] = field(default_factory=dict)

    def add_family(self, family: ModelFamily) -> None:
        if family.name in self.families:
            raise ValueError(f"model family '{family.name}' is registered twice")
        self.families[family.name] = family

    def add_flavor(self, family: str, flavor: str, args: Any) -> None:
        """Let a third party add a flavor (e.g. a 1B Llama 3) to an existing family."""
        self.get(family).flavors[flavor] = args

    def get(self, name: str) -> ModelFamily:
        if name not in self.families:
            raise _unknown("model", name, sorted(self.families), "set model.name")
        return self.families[name]


class Backend(Protocol):
    """Where a job runs. ``launch`` returns the exit code of the job (0 = success)."""

    name: str
    description: str

    def launch(self, job: Job, dry_run: bool) -> int: ...


@dataclass
class BackendRegistry:
    backends: dict[str, Backend] = field(default_factory=dict)

    def add(self, backend: Backend) -> None:
        if backend.name in self.backends:
            raise ValueError(f"backend '{backend.name}' is registered twice")
        self.backends[backend.name] = backend

    def get(self, name: str) -> Backend:
        if name not in self.backends:
            raise _unknown("backend", name, sorted(self.backends), "pass --backend NAME")
        return self.backends[name]


BuildFn = Callable[[Any], Any]
