"""Loading the job config: TOML file, torchtitan aliases, overrides, types.

The result is a :class:`JobConfig` whose attributes are the sections
(``config.training.steps``). Every mistake is a :class:`ConfigError` that
names the key, what was expected and, for typos, the closest valid name.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from titan.core.config.aliases import VALUE_ALIASES, ConfigAlias
from titan.core.config.eras import detect_era
from titan.core.errors import ConfigError

# Values of an unsupported torchtitan setting that ask for nothing (e.g. a degree of 1).
_ASKS_NOTHING = (0, 1, "", None, [], "none", "disabled", "steps")


def _asks_nothing(value: Any) -> bool:
    """False, a degree of 1, "disabled" ... (``True == 1`` in Python, so booleans apart)."""
    if isinstance(value, bool):
        return not value
    return value in _ASKS_NOTHING


class JobConfig:
    """Typed sections of one job, plus the plugins its file or aliases switched on."""

    def __init__(self, sections: dict[str, Any], requested_plugins: list[str] | None = None):
        self._sections = sections
        self.requested_plugins: list[str] = list(requested_plugins or [])
        self.notes: list[str] = []
        self.source: Path | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_sections"][name]
        except KeyError:
            raise AttributeError(f"config has no section '{name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self._sections

    @property
    def sections(self) -> dict[str, Any]:
        return self._sections

    def to_dict(self, only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        keep = set(only) if only is not None else None
        return {
            name: dataclasses.asdict(sec)
            for name, sec in self._sections.items()
            if keep is None or name in keep
        }

    def to_toml(self, only: Iterable[str] | None = None) -> str:
        from titan.core.config.toml_writer import dumps

        return dumps(self.to_dict(only))


# --- parsing ---------------------------------------------------------------


def parse_overrides(args: Iterable[str]) -> list[tuple[str, str]]:
    """``["--training.steps=10", "--model.flavor", "8B"]`` -> ``[("training.steps", "10"), ...]``."""
    out: list[tuple[str, str]] = []
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=", 1)[0]:
            raise ConfigError(f"unexpected argument '{arg}'; {_override_hint(arg)}")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:  # a bare flag means true
            key, value = arg[2:], "true"
        out.append((key, value))
        i += 1
    return out


def _override_hint(arg: str) -> str:
    """The likely fix for an argument that is not ``--section.key=value``."""
    key = arg.lstrip("-").split("=", 1)[0]
    if not arg.startswith("-") and "=" in arg and "." in key:
        return f"did you mean '--{arg}'? (config overrides look like --section.key=value)"
    if not arg.startswith("-") and arg.endswith(".toml"):
        return (
            "only one config file is read and it comes first, before the options "
            "(titan run CONFIG.toml --section.key=value)"
        )
    return "config overrides look like --section.key=value"


def _parse_cli_value(raw: str) -> Any:
    """TOML syntax where it parses (numbers, booleans, lists), else a plain string.

    What a string key gets is the text as typed instead (:func:`_cli_text`); the
    parsed value serves the other key types and the aliases.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _cli_text(raw: str, parsed: Any) -> str:
    """An override as a string key gets it: as typed (``00:20:00``, ``1.50``, ``true``),
    except that a quoted TOML string (``'"a b"'``) gives its content."""
    if isinstance(parsed, str) and raw.lstrip()[:1] in ('"', "'"):
        return parsed
    return raw


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; every way the file can be unusable is one :class:`ConfigError`."""
    if path.is_dir():
        raise ConfigError(
            f"config path '{path}' is a directory; pass the path of a .toml file "
            "(e.g. its job_config.toml)"
        )
    if not path.is_file():
        name = str(path)
        if "=" in name and "." in name.split("=", 1)[0] and not name.endswith(".toml"):
            raise ConfigError(
                f"config file '{path}' does not exist; did you mean the override '--{name}'? "
                "(config overrides look like --section.key=value)"
            )
        raise ConfigError(f"config file '{path}' does not exist; pass the path of a .toml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file '{path}' is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x});"
            " save it as UTF-8 (TOML files are UTF-8)"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file '{path}' cannot be read ({exc.strerror or exc}); fix its permissions"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file '{path}' is not valid TOML: {exc}; fix that line (see docs/config.md)"
        ) from None


def _flatten(raw: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    """``{"training": {"steps": 3}}`` -> ``[("training.steps", 3)]``.

    Nested tables (torchtitan v0.2's ``[quantize.linear.float8]``) become
    longer dotted keys; the resolver accepts those only where an alias reads them.
    """
    items: list[tuple[str, Any]] = []
    for section, body in raw.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"'{section}' in {where} must be a [section] table of keys, not a value"
            )
        items.extend(_walk(section, body))
    return items


def _walk(prefix: str, body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in body.items():
        if isinstance(value, dict):
            out.extend(_walk(f"{prefix}.{key}", value))
        else:
            out.append((f"{prefix}.{key}", value))
    return out


class _Resolver:
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
            if alias.unsupported and not _asks_nothing(value):
                raise ConfigError(
                    f"'{key} = {_show(value)}' is a torchtitan setting titan does not support "
                    f"({alias.note}); {alias.fix or 'remove it'}"
                )
            if alias.unsupported:
                self.notes.append(
                    f"accepted torchtitan key {key} = {_show(value)}: it asks for no "
                    f"{alias.note} (titan has none)"
                )
                return []
            if alias.ignore:
                self.notes.append(f"ignored torchtitan key {key} ({alias.note})")
                return []
            if alias.activates:
                if not _asks_nothing(value):
                    self.plugins.append(alias.activates)
                    self.notes.append(f"{key} = {_show(value)} -> plugin '{alias.activates}'")
                else:
                    self.notes.append(
                        f"{key} = {_show(value)}: plugin '{alias.activates}' stays off"
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
                self.notes.append(f"{key} -> {a.target} = {_show(present)}")
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
        return key, _coerce(key, value, hint, from_cli, raw)

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


def _show(value: Any) -> str:
    """A value as TOML writes it (true, 1, 'op')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        return f"a list of {_type_name(inner)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _coerce(key: str, value: Any, hint: Any, from_cli: bool, raw: str | None = None) -> Any:
    """``value`` as the type ``hint`` asks for. ``raw``: the override's text as typed,
    which a string key (alone, in a union, or as list items) gets instead of ``value``."""

    def bad() -> ConfigError:
        shown = value.isoformat() if isinstance(value, _DATES) else repr(value)
        return ConfigError(
            f"config key '{key}' expects {_type_name(hint)}, got {shown} ({type(value).__name__})"
        )

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg, from_cli, raw)
            except ConfigError:
                continue
        raise bad()
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        if from_cli and str(value) in [str(c) for c in choices]:
            return next(c for c in choices if str(c) == str(value))
        if raw is not None and _cli_text(raw, value) in choices:
            return _cli_text(raw, value)
        raise bad()
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        if from_cli and not isinstance(value, list):
            text = _cli_text(raw, value) if raw is not None else value
            if isinstance(text, str):  # --data.weights=1,2 or =3: each item as typed
                items = [v.strip() for v in text.split(",") if v.strip()]
                return [_coerce(key, _parse_cli_value(v), inner, from_cli, v) for v in items]
            value = [value]  # a list of one
        if not isinstance(value, list):
            raise bad()
        return [_coerce(key, v, inner, from_cli) for v in value]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if hint is str:
        if raw is not None:
            return _cli_text(raw, value)
        if isinstance(value, str):
            return value
        if isinstance(value, _DATES):  # TOML's unquoted 00:20:00 or 2024-01-01: its ISO text
            return value.isoformat()
        if from_cli and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    return value


_DATES = (datetime.date, datetime.time)  # TOML dates, times and date-times (a subclass)


def load_config(
    path: Path | None,
    overrides: Iterable[tuple[str, str]],
    schema: Mapping[str, type],
    aliases: Iterable[ConfigAlias],
) -> JobConfig:
    """Merge defaults, the TOML file and the overrides (last wins) into a :class:`JobConfig`."""
    resolver = _Resolver(schema, aliases)
    values: dict[str, Any] = {}
    if path is not None:
        items = _flatten(read_toml(path), str(path))
        era = detect_era(k for k, _ in items)
        if era is not None:
            values.update(era.defaults)
            changed = "".join(f"; {k} = {v!r}" for k, v in era.defaults.items())
            resolver.notes.append(f"read as a {era.name} file{changed}")
        for key, value in items:
            try:
                values.update(resolver.resolve(key, value, from_cli=False))
            except ConfigError as exc:  # name the file: the key may be in any of several
                raise ConfigError(f"{path}: {exc}") from None
    for key, raw in overrides:
        if "." not in key:
            raise ConfigError(
                f"override '--{key}' must name a section and a key: --section.key=value"
            )
        values.update(resolver.resolve(key, _parse_cli_value(raw), from_cli=True, raw=raw))
    sections: dict[str, Any] = {}
    for name, cls in schema.items():
        kwargs = {k.split(".", 1)[1]: v for k, v in values.items() if k.split(".", 1)[0] == name}
        sections[name] = cls(**kwargs)
    config = JobConfig(sections)
    config.source = path
    config.notes = resolver.notes
    config.requested_plugins = (
        [*sections["plugins"].enabled, *resolver.plugins]
        if "plugins" in sections
        else list(resolver.plugins)
    )
    return config
