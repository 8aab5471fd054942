"""docs/slurm.md works as written: scripts/slurm-guide runs its commands in order on the cluster.

The script reads the page's commands itself and stops at the first one that does
not do what the page says (see its docstring). It submits two small jobs (one
rank, then two nodes): a few minutes on a busy machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import REPO, dist  # noqa: E402

GUIDE = REPO / "scripts" / "slurm-guide"


def test_the_slurm_guide_runs_as_written(slurm_cluster):
    env = dist.titan_env()
    env.pop("SLURM_CONF", None)  # the page exports it itself
    proc = subprocess.run(
        [sys.executable, str(GUIDE), str(slurm_cluster)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "docs/slurm.md ran as written" in proc.stdout
    ran = [line for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert len(ran) >= 14, proc.stdout  # every command a test cluster can run, ran


def test_the_guide_script_knows_every_command_of_the_page():
    """Cheap, no cluster: the page and the script's table of checks agree."""
    import runpy

    guide = runpy.run_path(str(GUIDE), run_name="slurm_guide")  # its functions, not main()
    page_commands, checks = guide["page_commands"], guide["CHECKS"]
    page = (REPO / "docs" / "slurm.md").read_text()
    assert sorted({c.text for c in page_commands(page)}) == sorted(checks)
    first = next(c for c in page_commands(page) if c.shows)
    assert first.shows[0].startswith("titan llama3/debug backend=slurm")
