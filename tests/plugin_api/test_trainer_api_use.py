"""titan's own plugins use only the trainer API a third party gets (``hookspecs.TRAINER_API``).

Read from the source, not from a run: in every plugin module titan ships (the optimizations,
the backends, the built-in plugins) and in the example plugins, each function that takes a
``trainer`` argument (or an alias of it, ``t = trainer``) may read only the attributes the
plugin API documents. A plugin that needs more gets it added to the API (and its docs), so a
third party can do what titan's own plugins do.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from titan.core.hookspecs import TRAINER_API

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = [
    ROOT / "packages/optims/src/titan/optims",
    ROOT / "packages/backends/src/titan/backends",
    ROOT / "packages/core/src/titan/core/builtin",
    ROOT / "examples/plugins",
]
ALLOWED = {re.match(r"\w+", name).group(0) for name in TRAINER_API}


def _trainer_names(fn: ast.FunctionDef) -> set[str]:
    """``trainer`` when it is a titan Trainer argument, plus local aliases of it."""
    args = fn.args.args + fn.args.kwonlyargs
    names = set()
    for arg in args:
        if arg.arg != "trainer":
            continue
        note = ast.unparse(arg.annotation) if arg.annotation else "Any"
        if note in ("Any", "Trainer", "'Trainer'"):
            names.add("trainer")
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Name)
            and node.value.id in names
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def trainer_reads(path: Path) -> list[tuple[int, str]]:
    """(line, attribute) of every ``trainer.<attribute>`` in ``path``'s functions."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        names = _trainer_names(fn)
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
            ):
                found.append((node.lineno, node.attr))
    return found


def test_titan_plugins_read_only_the_documented_trainer_api() -> None:
    outside = []
    seen = 0
    for folder in PLUGIN_SOURCES:
        for path in sorted(folder.rglob("*.py")):
            for line, attr in trainer_reads(path):
                seen += 1
                if attr not in ALLOWED:
                    outside.append(f"{path.relative_to(ROOT)}:{line}: trainer.{attr}")
    assert seen > 30  # the scan does find the plugins' trainer reads
    assert not outside, "\n".join(outside)


def test_no_plugin_replaces_a_trainer_attribute() -> None:
    """``trainer.loss_fn = ...`` (tp and compile did) is gone: plugins wrap ``loss`` instead."""
    assigned = []
    for folder in PLUGIN_SOURCES:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                targets = node.targets if isinstance(node, ast.Assign) else []
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "trainer"
                    ):
                        assigned.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not assigned, assigned


def test_the_scan_sees_a_private_read(tmp_path: Path) -> None:
    source = "def titan_train_end(trainer):\n    t = trainer\n    return t.checkpointer.folder\n"
    path = tmp_path / "plugin.py"
    path.write_text(source)
    assert trainer_reads(path) == [(3, "checkpointer")]
