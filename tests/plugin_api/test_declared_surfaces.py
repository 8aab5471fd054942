"""The trainer and the config declare what they hold, so plugins can be typed against them.

* Every attribute the Trainer sets anywhere (``self.x = ...``, ``with ... as self.x``) is
  declared in its class body, and every name of ``hookspecs.TRAINER_API`` is one of them:
  an attribute first set halfway through ``train()`` cannot hide from readers.
* ``JobConfig`` declares each of titan's own sections with its dataclass, the same ones
  ``CORE_SECTIONS`` builds.
"""

from __future__ import annotations

import ast
import inspect
import re
import typing

import titan.core.config.sections as sections_module
from titan.core.config.job import JobConfig
from titan.core.config.sections import CORE_SECTIONS
from titan.core.hookspecs import TRAINER_API
from titan.core.trainer import Trainer


def _set_attributes(cls: type) -> set[str]:
    tree = ast.parse(inspect.getsource(cls))
    names = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            targets = [node.optional_vars]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                ):
                    names.add(sub.attr)
    return names


def test_every_trainer_attribute_is_declared() -> None:
    declared = set(Trainer.__annotations__)
    set_somewhere = _set_attributes(Trainer)
    assert {"model", "optimizer", "_gc", "fsdp_applied"} <= set_somewhere  # the scan works
    assert set_somewhere <= declared, sorted(set_somewhere - declared)


def test_the_plugin_api_is_declared_on_the_trainer() -> None:
    api = {re.match(r"\w+", name).group(0) for name in TRAINER_API}
    methods = {name for name, _ in inspect.getmembers(Trainer) if not name.startswith("__")}
    assert api <= set(Trainer.__annotations__) | methods, sorted(
        api - set(Trainer.__annotations__) - methods
    )


def test_job_config_types_titan_s_own_sections() -> None:
    # The section classes are imported for type checkers only: resolve the names in their module.
    hints = typing.get_type_hints(JobConfig, vars(sections_module))
    assert {name: hints[name] for name in CORE_SECTIONS} == CORE_SECTIONS
