"""titan's own test suite opts in to titan's plugin test helper, as any plugin project does.

``titan.core.testing`` (the ``titan_runner`` fixture) is not registered with pytest by
installing titan: a project asks for it, as it asks for pytest's ``pytester``. pytest
honours ``pytest_plugins`` only in the conftest files it reads before collecting (the
rootdir's, and those of the folders given on the command line or in ``testpaths``);
one met during collection stops the session ("Defining 'pytest_plugins' in a
non-top-level conftest is no longer supported"). So the request cannot live in
``examples/plugins/<name>/conftest.py``, and in ``tests/conftest.py`` it would be
missed by ``pytest examples/plugins/...``. Here, next to the pyproject.toml that makes
this folder the rootdir, it covers ``tests/`` and ``examples/plugins/*/tests`` whatever
paths pytest is given.
"""

import os

pytest_plugins = ["titan.core.testing"]

# One OpenMP thread per test process, waiting passively. The tests' tensors are tiny, and
# each test's own `titan run`s and ranks are further processes on the same 2 cores:
# threads that spin while waiting for a core made the data and model tests 20% slower
# (74 s with torch's default threads, 60 s with these). Set here, before anything imports
# torch, which reads them once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# No terminal size from outside. pytest-xdist's workers start with COLUMNS=80 and LINES=24
# set, and rich fixes a console's width for good when it is created with COLUMNS set: the
# tests that widen titan's tables (`COLUMNS` in a test's own environment, read when the table
# is drawn) would then see them cut at 80 columns in a worker, and not in a serial run.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
