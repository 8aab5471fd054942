"""docs/plugins.md's hook table and trainer-API table say what hookspecs.py defines.

A plugin author writes from the docs (the example plugins are written from them alone),
so a hook missing from the table, an argument the table leaves out, or a name the
table keeps after the spec changed, sends them to write a hook that titan rejects. The
tables are checked against the specs themselves: the hook names and argument lists of
``titan.core.hookspecs`` (as pluggy reads them) and the keys of ``TRAINER_API``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from titan.core import PROJECT_NAME, hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _section(title: str) -> str:
    """The text of the ``## title`` section of docs/plugins.md, up to the next ``##``."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _first_cells(section: str, prefix: str) -> list[str]:
    """The code in the first cell of each table row whose first cell starts with ``prefix``."""
    return re.findall(rf"^\| `({re.escape(prefix)}[^`]*)` \|", section, flags=re.MULTILINE)


def _spec_signatures() -> dict[str, tuple[str, ...]]:
    """Every hook titan defines, with its arguments in the spec's order."""
    return {
        name: tuple(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if name.startswith(f"{PROJECT_NAME}_") and inspect.isfunction(fn)
    }


def _documented_signatures() -> dict[str, tuple[str, ...]]:
    """``{hook: arguments}`` as the rows of the hook table write them (``name(a, b)``)."""
    rows = _first_cells(_section("The hooks"), f"{PROJECT_NAME}_")
    documented: dict[str, tuple[str, ...]] = {}
    for row in rows:
        match = re.fullmatch(r"(\w+)\(([^()]*)\)", row)
        assert match, f"hook table row `{row}` is not written as name(arg, ...)"
        name, args = match.groups()
        assert name not in documented, f"{name} has two rows in the hook table"
        documented[name] = tuple(a.strip() for a in args.split(",") if a.strip())
    return documented


def test_every_hook_is_in_the_table_with_its_arguments() -> None:
    specs, documented = _spec_signatures(), _documented_signatures()
    assert len(specs) > 20  # the specs were read (a renamed module would make this vacuous)
    missing = sorted(set(specs) - set(documented))
    assert not missing, f"hooks in hookspecs.py missing from docs/plugins.md's table: {missing}"
    wrong = {
        name: {"docs": documented[name], "spec": args}
        for name, args in specs.items()
        if documented[name] != args
    }
    assert not wrong, f"hook arguments that differ between docs and spec: {wrong}"


def test_the_table_names_no_hook_titan_does_not_define() -> None:
    unknown = sorted(set(_documented_signatures()) - set(_spec_signatures()))
    assert not unknown, f"docs/plugins.md's hook table names hooks titan does not define: {unknown}"


def test_the_trainer_table_is_trainer_api() -> None:
    rows = _first_cells(_section("The trainer's API for plugins"), "trainer.")
    documented = [row.removeprefix("trainer.") for row in rows]
    assert len(documented) == len(set(documented)), f"a trainer attribute has two rows: {rows}"
    assert sorted(documented) == sorted(hookspecs.TRAINER_API), (
        f"only in the docs: {sorted(set(documented) - set(hookspecs.TRAINER_API))}; "
        f"only in TRAINER_API: {sorted(set(hookspecs.TRAINER_API) - set(documented))}"
    )
