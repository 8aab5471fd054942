"""Turning a config value into the type its section's field declares.

One function for file and command-line values alike, so a wrong type reads the same
wherever it was written: the key, the type expected and the value given.
"""

from __future__ import annotations

import datetime
import types
import typing
from typing import Any, Literal

from titan.core.config.overrides import cli_text, parse_cli_value
from titan.core.errors import ConfigError


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        return f"a list of {type_name(inner)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def coerce(key: str, value: Any, hint: Any, from_cli: bool, raw: str | None = None) -> Any:
    """``value`` as the type ``hint`` asks for. ``raw``: the override's text as typed,
    which a string key (alone, in a union, or as list items) gets instead of ``value``."""

    def bad() -> ConfigError:
        shown = value.isoformat() if isinstance(value, _DATES) else repr(value)
        return ConfigError(
            f"config key '{key}' expects {type_name(hint)}, got {shown} ({type(value).__name__})"
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
                return coerce(key, value, arg, from_cli, raw)
            except ConfigError:
                continue
        raise bad()
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        if from_cli and str(value) in [str(c) for c in choices]:
            return next(c for c in choices if str(c) == str(value))
        if raw is not None and cli_text(raw, value) in choices:
            return cli_text(raw, value)
        raise bad()
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (Any,)
        if from_cli and not isinstance(value, list):
            text = cli_text(raw, value) if raw is not None else value
            if isinstance(text, str):  # --data.weights=1,2 or =3: each item as typed
                items = [v.strip() for v in text.split(",") if v.strip()]
                return [coerce(key, parse_cli_value(v), inner, from_cli, v) for v in items]
            value = [value]  # a list of one
        if not isinstance(value, list):
            raise bad()
        return [coerce(key, v, inner, from_cli) for v in value]
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
            return cli_text(raw, value)
        if isinstance(value, str):
            return value
        if isinstance(value, _DATES):  # TOML's unquoted 00:20:00 or 2024-01-01: its ISO text
            return value.isoformat()
        if from_cli and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    return value


_DATES = (datetime.date, datetime.time)  # TOML dates, times and date-times (a subclass)
