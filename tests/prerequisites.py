"""What the suite needs from the machine, said once per missing part, in one line each.

Some tests need more than Python: the Slurm tests a Slurm installation (or root, to
install it with apt-get), the SageMaker container tests network namespaces
(``unshare``, as root or through user namespaces). Where a part is missing, the tests that
need it fail with one line naming it and what provides it (``require``), never with a long
error from deep inside a fixture; the end of the run lists each missing part once
(``pytest_terminal_summary`` in tests/conftest.py), and the rest of the suite runs as usual.

The summary is read from the test reports, not from a record kept in this module: with
pytest-xdist the tests run in worker processes, and only their reports reach the process
that prints the summary.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

PREFIX = "missing prerequisite: "


def require(line: str) -> NoReturn:
    """Fail the calling test (or fixture) with ``line``: the missing part and what provides it."""
    pytest.fail(f"{PREFIX}{line}", pytrace=False)


def summary_lines(reports: list[pytest.TestReport]) -> list[str]:
    """One line per missing prerequisite among the failed ``reports``, in the order first met.

    ``require`` fails without a traceback, so the line is one line of the report's text
    (pytest-xdist puts a line naming the worker above it).
    """
    lines = (line for report in reports for line in report.longreprtext.splitlines())
    return list(dict.fromkeys(line for line in lines if line.startswith(PREFIX)))
