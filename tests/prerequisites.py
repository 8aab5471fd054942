"""What the suite needs from the machine, said once per missing part, in one line each.

Some tests need more than Python: the Slurm tests a Slurm installation (or root, to
install it with apt-get), the SageMaker container tests network namespaces
(``unshare``, as root or through user namespaces). Where a part is missing, the tests that
need it fail with one line naming it and what provides it (``require``), never with a long
error from deep inside a fixture; the end of the run lists each missing part once
(``pytest_terminal_summary`` in tests/conftest.py), and the rest of the suite runs as usual.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

#: name of the missing part -> the one line that says what it is and what provides it
MISSING: dict[str, str] = {}


def require(name: str, line: str) -> NoReturn:
    """Fail the calling test (or fixture) with ``line``, and remember it for the summary."""
    MISSING[name] = line
    pytest.fail(f"missing prerequisite: {line}", pytrace=False)


def summary_lines() -> list[str]:
    """One line per missing prerequisite, in the order they were first met."""
    return [f"missing prerequisite: {line}" for line in MISSING.values()]
