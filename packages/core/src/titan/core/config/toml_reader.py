"""Reading a job's TOML file: every way it can be unusable is one :class:`ConfigError`, and
its tables become dotted keys for the resolver."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from titan.core.errors import ConfigError


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


def flatten(raw: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
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
