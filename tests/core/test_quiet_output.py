"""A run's output is titan's: no library warning lines (issue 13)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cli_runs import titan_cli  # tests/ is on sys.path (tests/conftest.py)

# What a library warning looks like: warnings.warn's "file.py:123: SomeWarning: ..." and its
# source line, torch logging's "[rank0]:W1201 07:28:28.751000 ...", a Python logging record.
LIBRARY_LINE = re.compile(
    r"(Warning: |^\s*warnings\.warn\(|^\[rank\d+\]:[WE]\d{4} |^(WARNING|ERROR):[\w.]+:)"
)


def test_two_rank_compile_fp8_tp_run_prints_no_library_warnings(tmp_path: Path) -> None:
    dump = tmp_path / "run"
    proc = titan_cli(
        "run",
        "--nproc",
        "2",
        "--plugins",
        "compile,fp8,tp",
        "--training.steps=1",
        "--training.seq_len=32",
        "--training.local_batch_size=1",
        f"--job.dump_folder={dump}",
        timeout=1200,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    output = (proc.stdout + proc.stderr).splitlines()
    noise = [line for line in output if LIBRARY_LINE.search(line)]
    assert not noise, "\n".join(noise)
    assert any(line.startswith("done: loss") for line in output), proc.stderr  # it trained
    titan_prefixes = ("titan ", "note: ", "step ", "done: ", "MFU against ")
    others = [line for line in output if line.strip() and not line.startswith(titan_prefixes)]
    assert not others, "\n".join(others)  # every line is one of titan's
