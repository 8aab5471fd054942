"""No module of titan.core grows past 450 lines: a longer one is split along its jobs.

A module that does several things is hard to read, review and change without touching
the others; the limit makes the split happen when the module grows, not later.
"""

from __future__ import annotations

from pathlib import Path

MAX_LINES = 450
CORE = Path(__file__).resolve().parents[2] / "packages" / "core"


def test_no_core_module_exceeds_the_line_limit() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert modules, f"no Python modules found under {CORE}"
    too_long = {
        str(path.relative_to(CORE.parents[1])): n
        for path in modules
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, (
        f"modules over {MAX_LINES} lines (split each along its jobs): "
        + ", ".join(f"{name} ({n} lines)" for name, n in sorted(too_long.items()))
    )
