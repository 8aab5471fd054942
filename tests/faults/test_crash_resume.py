"""kill -9 at any moment, during a sync or an async save: resume from the newest complete one.

Also: an async checkpoint is usable as soon as it is complete (not only after the
next save), so a crash right after it does not lose it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_helpers import REFERENCE_STEPS, metrics_lines

from titan.core.folders import complete_checkpoints

_TMP = re.compile(r"^step-(\d+)\.tmp$")


def _complete_steps(folder: Path) -> list[int]:
    return [s for s, _ in complete_checkpoints(folder)]


def _writing(folder: Path) -> tuple[int, int] | None:
    """(step being written, newest complete step) while a save is unfinished after a first one."""
    if not folder.is_dir():
        return None
    tmp = [
        int(m.group(1))
        for p in folder.iterdir()
        if (m := _TMP.match(p.name)) and not (p / ".metadata").exists()
    ]
    done = _complete_steps(folder)
    if tmp and done and max(tmp) > max(done):
        return max(tmp), max(done)
    return None


def _kill_mid_save(proc: subprocess.Popen, folder: Path, timeout: float = 300) -> int:
    """Freeze the run while a save is unfinished, check it still is, SIGKILL it; the step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before a save could be interrupted"
        if _writing(folder):
            os.kill(proc.pid, signal.SIGSTOP)
            state = _writing(folder)
            if state:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return state[0]
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("no checkpoint save was caught in flight")


def _newest_complete(folder: Path) -> int:
    """What a resume must use: complete folders, and .tmp ones whose DCP index was written."""
    steps = _complete_steps(folder)
    steps += [
        int(m.group(1))
        for p in folder.iterdir()
        if (m := _TMP.match(p.name)) and (p / ".metadata").is_file()
    ]
    return max(steps)


@pytest.mark.parametrize("mode", ["disabled", "async"])
def test_sigkill_during_a_save_resumes_from_the_newest_complete(
    mode, reference, run_exact, exact_args, tmp_path, titan_process
):
    dump = tmp_path / "killed"
    ckpt = [
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=2",
        f"--checkpoint.async_mode={mode}",
    ]
    steps = f"--training.steps={REFERENCE_STEPS}"
    proc = titan_process(*exact_args, f"--job.dump_folder={dump}", steps, *ckpt)
    folder = dump / "checkpoint"
    writing = _kill_mid_save(proc, folder)
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / f"step-{writing}").exists()
    newest = _newest_complete(folder)
    assert newest < writing

    resumed = run_exact("killed", steps, *ckpt, dump=dump)
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {folder / f'step-{newest}'} (step {newest})" in (
        resumed.proc.stderr
    )
    assert sorted(resumed.losses) == list(range(newest + 1, REFERENCE_STEPS + 1))
    for step, loss in resumed.losses.items():
        assert loss == reference.losses[step], step
    assert not list(folder.glob("*.tmp"))


def test_async_checkpoint_is_published_when_complete(
    reference, run_exact, exact_args, tmp_path, titan_process
):
    """Save at step 4 (async), next at 8: a kill -9 in between resumes from step 4."""
    dump = tmp_path / "async"
    ckpt = [
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=4",
        "--checkpoint.async_mode=async",
    ]
    steps = f"--training.steps={REFERENCE_STEPS}"
    proc = titan_process(*exact_args, f"--job.dump_folder={dump}", steps, *ckpt)
    folder = dump / "checkpoint"
    deadline = time.monotonic() + 300
    while not (folder / "step-4").is_dir():
        assert proc.poll() is None, proc.log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # before step 8's save: the old code published step 4 there
    proc.wait()
    logged = metrics_lines(dump)
    assert logged < 8, "the run reached the next save before step-4 was published"
    assert _complete_steps(folder) == [4]

    resumed = run_exact("async", steps, *ckpt, dump=dump)
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {folder / 'step-4'} (step 4)" in resumed.proc.stderr
    for step, loss in resumed.losses.items():
        assert loss == reference.losses[step], step
