"""A small TOML writer for flat config sections (stdlib tomllib only reads)."""

from __future__ import annotations

import json
import math
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if v is None:
        raise ValueError("TOML has no null; leave the key out")
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(sections: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for name, body in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {_value(v)}" for k, v in body.items() if v is not None)
        out.append("")
    return "\n".join(out)
