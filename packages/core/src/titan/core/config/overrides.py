"""The ``--section.key=value`` overrides of the command line: parsed into pairs, and their
values read as TOML where they parse.

Apart from the file reader and the type coercer because the command line has its own
rules: a bare flag means true, and a string key gets the text as typed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from typing import Any

from titan.core.errors import ConfigError


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


def parse_cli_value(raw: str) -> Any:
    """TOML syntax where it parses (numbers, booleans, lists), else a plain string.

    What a string key gets is the text as typed instead (:func:`cli_text`); the
    parsed value serves the other key types and the aliases.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def cli_text(raw: str, parsed: Any) -> str:
    """An override as a string key gets it: as typed (``00:20:00``, ``1.50``, ``true``),
    except that a quoted TOML string (``'"a b"'``) gives its content."""
    if isinstance(parsed, str) and raw.lstrip()[:1] in ('"', "'"):
        return parsed
    return raw
