"""Folder problems are one line and exit 2 before anything is built; reruns say what they do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from exact_runs import run_titan


def _titan(*args: str) -> subprocess.CompletedProcess:
    """A one-step ``titan run ARGS`` (tests/exact_runs.py's command and environment)."""
    return run_titan("--training.steps=1", *args, timeout=300)


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write to: root ignores permissions, /sys is read-only."""
    if os.geteuid() == 0:
        return Path("/sys/titan-test-run")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked / "run"


@pytest.mark.parametrize(
    "problem",
    [
        "empty",
        "dump is a file",
        "dump under a file",
        "dump not writable",
        "checkpoint is a file",
        "checkpoint folder empty",
        "tensorboard under a file",
    ],
)
def test_folder_problem_is_one_line_exit_2_before_the_model_is_built(problem, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    dump = tmp_path / "run"
    ckpt = "--checkpoint.enable_checkpoint=true"
    args, expected = {
        "empty": (["--job.dump_folder="], "'job.dump_folder' is empty"),
        "dump is a file": ([f"--job.dump_folder={afile}"], "is a file, not a folder"),
        "dump under a file": ([f"--job.dump_folder={afile}/run"], f"lies under '{afile}'"),
        "dump not writable": (
            [f"--job.dump_folder={_unwritable(tmp_path)}"],
            "is not writable",
        ),
        "checkpoint is a file": (
            [f"--job.dump_folder={dump}", ckpt, f"--checkpoint.folder={afile}"],
            f"checkpoint.folder '{afile}' is a file",
        ),
        "checkpoint folder empty": (
            [f"--job.dump_folder={dump}", ckpt, "--checkpoint.folder="],
            "'checkpoint.folder' is empty",
        ),
        "tensorboard under a file": (
            [
                f"--job.dump_folder={dump}",
                "--metrics.enable_tensorboard=true",
                f"--metrics.save_tb_folder={afile}/tb",
            ],
            f"metrics.save_tb_folder '{afile}/tb' lies under",
        ),
    }[problem]
    proc = _titan(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr and "step" not in proc.stdout + proc.stderr.lower()
    assert not dump.exists()  # nothing written: no job_config.toml, no folder
    assert afile.read_text() == "not a folder"


def test_reruns_say_what_they_do_and_failed_runs_keep_job_config(tmp_path):
    dump = tmp_path / "run"
    base = [f"--job.dump_folder={dump}", "--training.seq_len=32", "--training.local_batch_size=2"]
    ckpt = ["--checkpoint.enable_checkpoint=true", "--checkpoint.interval=2"]
    first = _titan(*base, *ckpt, "--training.steps=2", "--metrics.log_freq=1")
    assert first.returncode == 0, first.stderr
    config = (dump / "job_config.toml").read_text()

    # Checkpoints present, checkpointing off: says it starts over and leaves them alone.
    off = _titan(*base, "--training.steps=1", "--metrics.log_freq=1", "--job.description=off")
    assert off.returncode == 0, off.stderr
    assert "holds checkpoints (newest: step 2) but checkpoint.enable_checkpoint is false" in (
        off.stderr
    )
    assert "appends its rows for steps 1-1 again" in off.stderr  # metrics.jsonl had steps 1-2
    assert (dump / "checkpoint" / "step-2" / ".metadata").is_file()
    config = (dump / "job_config.toml").read_text()  # a valid run's config replaces it
    assert 'description = "off"' in config

    # training.steps below the saved step: an error before anything runs.
    below = _titan(*base, *ckpt, "--training.steps=1")
    assert below.returncode == 2
    assert "already holds step 2: nothing to train" in below.stderr
    assert (dump / "job_config.toml").read_text() == config

    # Equal: the run is complete, said so.
    done = _titan(*base, *ckpt, "--training.steps=2")
    assert done.returncode == 0, done.stderr
    assert "is already complete" in done.stderr
    config = (dump / "job_config.toml").read_text()  # valid: it is this folder's config now

    # A config error found on the rank (after the CLI wrote the config): job_config.toml kept.
    bad = _titan(*base, "--training.seq_len=100000")
    assert bad.returncode == 2
    assert "exceeds the model's max_seq_len" in bad.stderr
    assert (dump / "job_config.toml").read_text() == config
    leftover = dump / "job_config.next.toml"  # only a promoted copy, never the failed config
    assert not leftover.exists() or "seq_len = 100000" not in leftover.read_text()


def test_a_folder_of_another_run_is_refused_and_the_same_run_continues(tmp_path):
    """Checkpoints of another run are not resumed by accident; the same run says it continues."""
    dump = tmp_path / "run"
    base = [
        f"--job.dump_folder={dump}",
        "--training.seq_len=32",
        "--training.local_batch_size=2",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=2",
    ]
    first = _titan(*base, "--training.steps=2")
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in dump.rglob("*"))

    other = _titan(*base, "--training.steps=4", "--training.seed=7")
    assert other.returncode == 2, other.stderr
    line = other.stderr.strip().splitlines()[-1]
    assert "holds checkpoints (newest: step 2) of another run" in line
    assert "training.seed 42 there, 7 here" in line and "--job.dump_folder" in line
    assert sorted(p.name for p in dump.rglob("*")) == before  # nothing written

    more = _titan(*base, "--training.steps=4", "--metrics.log_freq=1")
    assert more.returncode == 0, more.stderr
    assert f"continues the run in '{dump}' from its checkpoint at step 2 to step 4" in more.stderr
    assert "(first, step 3, resumed from step 2)" in more.stderr
