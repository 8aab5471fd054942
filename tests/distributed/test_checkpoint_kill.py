"""SIGKILL while a checkpoint is being written: the resume uses the previous complete one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from titan.core.folders import complete_checkpoints

_TMP = re.compile(r"^step-(\d+)\.tmp$")


def _writing(folder: Path) -> tuple[int, int] | None:
    """(step being written, newest complete step) while a save is in flight after a first one."""
    if not folder.is_dir():
        return None
    tmp = [int(m.group(1)) for p in folder.iterdir() if (m := _TMP.match(p.name))]
    done = [s for s, _ in complete_checkpoints(folder)]
    if tmp and done and max(tmp) > max(done):
        return max(tmp), max(done)
    return None


def _kill_mid_save(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> tuple[int, int]:
    """Freeze the trainer the moment a save is in flight, check it still is, then SIGKILL it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before a save could be interrupted"
        if _writing(folder):
            os.kill(proc.pid, signal.SIGSTOP)  # atomically stops it between two instructions
            state = _writing(folder)  # re-read while frozen: is the save still unfinished?
            if state:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return state
            os.kill(proc.pid, signal.SIGCONT)  # it finished in between: try the next save
        time.sleep(0.01)
    raise AssertionError("no checkpoint save was caught in flight")


def test_sigkill_during_checkpoint_write_resumes_from_previous(
    reference, run_exact, exact_args, tmp_path, titan_process
):
    dump = tmp_path / "killed"
    ckpt = ["--checkpoint.enable_checkpoint=true", "--checkpoint.interval=2"]
    proc = titan_process(*exact_args, f"--job.dump_folder={dump}", "--training.steps=20", *ckpt)
    folder = dump / "checkpoint"
    writing, previous = _kill_mid_save(proc, folder)
    assert proc.returncode == -signal.SIGKILL
    assert (folder / f"step-{writing}.tmp").is_dir()
    assert not (folder / f"step-{writing}").exists()

    resumed = run_exact(
        "killed", "--training.steps=20", *ckpt, "--checkpoint.keep_latest_k=2", dump=dump
    )
    assert f"resumed from checkpoint {folder / f'step-{previous}'} (step {previous})" in (
        resumed.stderr
    )
    assert sorted(resumed.losses) == list(range(previous + 1, 21))
    for step, loss in resumed.losses.items():
        assert loss == reference.losses[step], step
    assert not list(folder.glob("*.tmp"))  # the half-written save was cleaned up
    assert [s for s, _ in complete_checkpoints(folder)] == [18, 20]  # keep_latest_k=2
