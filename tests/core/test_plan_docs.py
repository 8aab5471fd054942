"""docs/plan.md's table of Llama 3 8B / 70B / 405B on p5 and p5e for 1T tokens is what the
commands printed under it give: each command runs as written (``uv run`` dropped, ``--json``
added) and its figures are compared with its row, so the docs cannot drift from ``titan plan``."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from titan.core.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "plan.md"
SECTION = "## Llama 3 8B, 70B and 405B on p5 and p5e"
GIB = 2**30


def section_text() -> str:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end > 0 else None]


def table_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def commands(text: str) -> list[list[str]]:
    block = text.split("```\n", 2)[1]  # the first fenced block after the table
    joined = block.replace("\\\n", " ")
    return [
        shlex.split(line)[4:]  # drop "uv run titan plan"
        for line in joined.splitlines()
        if line.startswith("uv run titan plan ")
    ]


def number(cell: str) -> float:
    return float(re.sub(r"[^0-9.]", "", cell.split()[0]))


def test_every_row_is_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = section_text()
    rows, cmds = table_rows(text), commands(text)
    assert len(rows) == len(cmds) == 6
    for row, args in zip(rows, cmds, strict=True):
        try:
            main(["plan", *args, "--json"])
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
        plan = json.loads(capsys.readouterr().out)
        speed, memory = plan["speed"], plan["memory"]
        label = f"{row['model']} on {row['where']}"
        assert plan["where"] == row["where"], label
        assert round(memory["peak_bytes"] / GIB, 1) == number(row["peak per GPU (phase)"]), label
        assert round(speed["tokens_per_second_per_device"]) == number(row["tok/s per GPU"]), label
        assert round(speed["seconds"] / 86400, 1) == number(row["time for 1T"]), label
        assert round(speed["gpu_hours"]) == number(row["GPU-hours for 1T"]), label
        assert round(speed["cost"]) == number(row["cost for 1T"]), label
