"""docs/sagemaker.md's commands work as written: `titan run` ones as dry runs, no network.

Every `uv run titan run` and `uv run titan sagemaker dockerfile` command of the
guide's code blocks runs from a folder laid out like a clone (``examples/``, the
tokenizer at ``assets/llama3/tokenizer.model``: the bundled tiktoken test file
stands in for Meta's), with no credentials and only a loopback network; a real
launch gets ``--dry-run`` appended (it would need AWS).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import aws_env, loopback_only, titan  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
GUIDE = REPO / "docs" / "sagemaker.md"
TIKTOKEN = REPO / "packages/core/src/titan/core/assets/tokenizers/test_tiktoken.model"


def guide_commands() -> list[list[str]]:
    """The `uv run titan ...` commands of the guide's fenced blocks, continuations joined."""
    commands: list[list[str]] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", GUIDE.read_text(), re.M | re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if not line.startswith("uv run titan "):
                continue
            words = shlex.split(line, comments=True)
            if words[:4] == ["uv", "run", "titan", "run"] or words[:5] == [
                "uv",
                "run",
                "titan",
                "sagemaker",
                "dockerfile",
            ]:
                commands.append(words[3:])
    return commands


def test_the_guides_commands_work_as_written(tmp_path):
    commands = guide_commands()
    runs = [c for c in commands if c[0] == "run"]
    assert len(runs) >= 3 and any(c[0] == "sagemaker" for c in commands), commands
    clone = tmp_path / "clone"
    (clone / "assets" / "llama3").mkdir(parents=True)
    shutil.copy(TIKTOKEN, clone / "assets" / "llama3" / "tokenizer.model")
    (clone / "examples").symlink_to(REPO / "examples")
    env = aws_env(None, tmp_path)  # a region (AWS_DEFAULT_REGION), no moto, and:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    with loopback_only():
        # The continuation example reads the config a launch keeps in its dump folder.
        headline = next(c for c in runs if "--dry-run" not in c and c[1].startswith("examples/"))
        i = headline.index("--backend")
        shown = titan("config", "show", *headline[1:i], *headline[i + 2 :], env=env, cwd=clone)
        assert shown.returncode == 0, shown.stderr
        kept = clone / "outputs" / "llama3_8b" / "job_config.toml"
        kept.parent.mkdir(parents=True)
        kept.write_text(shown.stdout)
        for command in commands:
            args = (
                [*command, "--dry-run"]
                if command[0] == "run" and "--dry-run" not in command
                else command
            )
            proc = titan(*args, env=env, cwd=clone)
            assert proc.returncode == 0, f"{shlex.join(command)}\n{proc.stderr}"
            if command[0] == "run" and "--dry-run" in command:
                # The guide's dry run prints the notes the guide shows (lock bumps included).
                shown_notes = [
                    ln for ln in GUIDE.read_text().splitlines() if ln.startswith("note:")
                ]
                for note in shown_notes:
                    assert note in proc.stderr.splitlines(), f"{note}\n{proc.stderr}"
            if command[0] == "run":
                request = json.loads(proc.stdout[proc.stdout.index("{") :])
                assert request["AlgorithmSpecification"]["TrainingImage"]
                if any(a.startswith("--sagemaker.checkpoint_s3_uri=") for a in command):
                    uri = next(a for a in command if a.startswith("--sagemaker.checkpoint_s3_uri="))
                    assert request["CheckpointConfig"]["S3Uri"] == uri.split("=", 1)[1]
    assert (clone / "titan-image" / "Dockerfile").is_file()
