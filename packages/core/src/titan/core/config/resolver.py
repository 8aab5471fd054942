"""From a key as written (titan's, or a torchtitan alias) to titan's typed ``(key, value)``.

Applies the aliases (renames, plugins switched on, settings refused or ignored), checks
section and key names with a suggestion for typos, and coerces the value
(:mod:`titan.core.config.coerce`). Collects the notes ``titan config show`` prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from titan.core.config.aliases import VALUE_ALIASES, ConfigAlias
from titan.core.config.coerce import coerce
from titan.core.errors import ConfigError

# Values of an unsupported torchtitan setting that ask for nothing (e.g. a degree of 1).
_ASKS_NOTHING = (0, 1, "", None, [], "none", "disabled", "steps")


def asks_nothing(value: Any) -> bool:
    """False, a degree of 1, "disabled" ... (``True == 1`` in Python, so booleans apart)."""
    if isinstance(value, bool):
        return not value
    return value in _ASKS_NOTHING


class Resolver:
    """Applies aliases and checks names and types against the schema."""

    def __init__(self, schema: Mapping[str, type], aliases: Iterable[ConfigAlias]):
        self.schema = dict(schema)
        self.aliases: dict[str, list[ConfigAlias]] = {}
        for a in aliases:
            self.aliases.setdefault(a.source, []).append(a)
        self.fields = {
            name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in self.schema.items()
        }
        self.hints = {name: typing.get_type_hints(cls) for name, cls in self.schema.items()}
        self.plugins: list[str] = []
        self.notes: list[str] = []

    def resolve(
        self, key: str, value: Any, from_cli: bool, raw: str | None = None
    ) -> list[tuple[str, Any]]:
        """The titan ``(key, value)`` pairs one file or command-line entry becomes (maybe none).

        ``raw`` is an override's text as typed; the type of the key it lands on (after
        aliases) decides whether that text or the parsed ``value`` is used.
        """
        aliases = self.aliases.get(key)
        if aliases is not None and key not in self._valid_keys():
            if all(a.item is not None for a in aliases):
                return self._resolve_items(key, value, aliases, from_cli)
            alias = aliases[0]
            if alias.unsupported and not asks_nothing(value):
                raise ConfigError(
                    f"'{key} = {show_value(value)}' is a torchtitan setting titan does not support "
                    f"({alias.note}); {alias.fix or 'remove it'}"
                )
            if alias.unsupported:
                self.notes.append(
                    f"accepted torchtitan key {key} = {show_value(value)}: it asks for no "
                    f"{alias.note} (titan has none)"
                )
                return []
            if alias.ignore:
                self.notes.append(f"ignored torchtitan key {key} ({alias.note})")
                return []
            if alias.activates:
                if not asks_nothing(value):
                    self.plugins.append(alias.activates)
                    self.notes.append(f"{key} = {show_value(value)} -> plugin '{alias.activates}'")
                else:
                    self.notes.append(
                        f"{key} = {show_value(value)}: plugin '{alias.activates}' stays off"
                    )
                if alias.target is None:
                    return []
            elif alias.target:
                self.notes.append(f"{key} -> {alias.target}")
            key = alias.target or key
        return [self._typed(key, value, from_cli, raw)]

    def _resolve_items(
        self, key: str, value: Any, aliases: list[ConfigAlias], from_cli: bool
    ) -> list[tuple[str, Any]]:
        """A list whose items each mean something (``model.converters = ["float8"]``)."""
        if from_cli and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' expects a list, got {value!r}; e.g. {key} = [\"...\"]")
        known = {a.item for a in aliases}
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ConfigError(
                f"'{key}' names {', '.join(map(repr, unknown))}, which no installed titan plugin "
                f"implements (known: {', '.join(sorted(map(str, known)))}); remove it"
            )
        out: list[tuple[str, Any]] = []
        for a in aliases:
            present = a.item in value
            if a.activates and present and a.activates not in self.plugins:
                self.plugins.append(a.activates)
                self.notes.append(f"{key} contains {a.item!r} -> plugin '{a.activates}'")
            if a.target:
                self.notes.append(f"{key} -> {a.target} = {show_value(present)}")
                out.append(self._typed(a.target, present, from_cli))
        return out

    def _typed(
        self, key: str, value: Any, from_cli: bool, raw: str | None = None
    ) -> tuple[str, Any]:
        section, _, name = key.partition(".")
        if "." in name and section in self.schema:
            raise ConfigError(
                f"'{key}' is a key of the nested table [{key.rsplit('.', 1)[0]}]; titan sections "
                "are flat (only torchtitan's nested tables listed by `titan config aliases` are "
                "read); move the key into a flat [section]"
            )
        self._check_name(section, name)
        renamed = VALUE_ALIASES.get((key, value)) if isinstance(value, str) else None
        if renamed is not None:
            self.notes.append(f"{key} = {value!r} -> {renamed!r}")
            value, raw = renamed, None
        hint = self.hints[section][name]
        return key, coerce(key, value, hint, from_cli, raw)

    def _valid_keys(self) -> set[str]:
        return {f"{s}.{k}" for s, fs in self.fields.items() for k in fs}

    def _check_name(self, section: str, name: str) -> None:
        if section not in self.schema:
            close = difflib.get_close_matches(section, list(self.schema), n=1)
            hint = (
                f"did you mean [{close[0]}]?"
                if close
                else "valid sections: " + ", ".join(sorted(self.schema))
            )
            raise ConfigError(
                f"unknown config section [{section}]; {hint} (a plugin's section exists only "
                "when that plugin is installed)"
            )
        if name not in self.fields[section]:
            raise ConfigError(
                f"unknown config key '{section}.{name}'; {self._suggest(section, name)}"
            )

    def _suggest(self, section: str, name: str) -> str:
        """The same key in another section, else the closest key of this section, else anywhere."""
        elsewhere = [f"{s}.{name}" for s, fs in self.fields.items() if name in fs]
        close = elsewhere or [
            f"{section}.{c}"
            for c in difflib.get_close_matches(name, list(self.fields[section]), n=1)
        ]
        close = close or difflib.get_close_matches(
            f"{section}.{name}", [*self._valid_keys(), *self.aliases], n=1, cutoff=0.6
        )
        if close:
            return f"did you mean '{close[0]}'?"
        return f"valid keys of [{section}]: " + ", ".join(self.fields[section])


def show_value(value: Any) -> str:
    """A value as TOML writes it (true, 1, 'op')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
