"""A save that fails mid-run (the disk is full): reported, previous checkpoint kept, exit 1.

The full disk is simulated with RLIMIT_FSIZE (what `ulimit -f` sets): a write past
the limit fails with EFBIG, as one on a full disk fails with ENOSPC. It works as
any user, root included, and on any file system; the first run writes its
checkpoints without the limit, the second resumes with it and cannot save.
"""

from __future__ import annotations

import resource
import subprocess

import pytest
from exact_runs import titan_cmd, titan_env

from titan.core.folders import complete_checkpoints

LIMIT = 4 * 2**20  # the debug model's checkpoint is about 70 MB; logs and configs are tiny


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize("mode", ["disabled", "async"])
def test_failed_save_keeps_the_previous_checkpoint_and_exits_nonzero(mode, tmp_path):
    dump = tmp_path / "run"
    args = [
        f"--job.dump_folder={dump}",
        "--training.seq_len=32",
        "--training.local_batch_size=2",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=2",
        f"--checkpoint.async_mode={mode}",
    ]
    first = subprocess.run(
        titan_cmd(*args, "--training.steps=2"), env=titan_env(), capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    folder = dump / "checkpoint"
    metadata = (folder / "step-2" / ".metadata").read_bytes()

    full = subprocess.run(
        titan_cmd(*args, "--training.steps=6"),
        env=titan_env(),
        capture_output=True,
        text=True,
        preexec_fn=_limited,
        timeout=400,
    )
    assert full.returncode == 1, full.stderr
    lines = [line for line in full.stderr.splitlines() if "could not write checkpoint" in line]
    assert len(lines) == 1, full.stderr
    # The OS error (EFBIG here, ENOSPC on a full disk) or, where torch.save's zip writer hides
    # it, the hint.
    assert "File too large" in lines[0] or "is the disk full?" in lines[0], lines[0]
    assert f"the newest complete checkpoint, {folder / 'step-2'}, is intact" in lines[0]
    assert "Traceback" not in full.stderr
    assert [s for s, _ in complete_checkpoints(folder)] == [2]
    assert (folder / "step-2" / ".metadata").read_bytes() == metadata
    assert not list(folder.glob("*.tmp"))  # the half-written one is gone
