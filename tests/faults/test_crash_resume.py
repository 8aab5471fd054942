"""kill -9 at any moment, during a sync or an async save: resume from the newest complete one.

Also: an async checkpoint is usable as soon as it is complete (not only after the
next save), so a crash right after it does not lose it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from fault_helpers import REFERENCE_STEPS
from gates import SAVE_GATE, STEP_GATE, gated_env, wait_for_file

from titan.core.folders import complete_checkpoints

_TMP = re.compile(r"^step-(\d+)\.tmp$")


def _complete_steps(folder: Path) -> list[int]:
    return [s for s, _ in complete_checkpoints(folder)]


def _kill_in_the_second_save(proc: subprocess.Popen, gate: Path, folder: Path) -> int:
    """SIGKILL the run while its second save is held inside DCP by the save gate; its step."""
    wait_for_file(gate / "saving", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (writing,) = [int(m.group(1)) for p in folder.iterdir() if (m := _TMP.match(p.name))]
    assert not (folder / f"step-{writing}.tmp" / ".metadata").exists()  # half-written
    return writing


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
    env, gate = gated_env(tmp_path, SAVE_GATE, at=2)
    proc = titan_process(*exact_args, f"--job.dump_folder={dump}", steps, *ckpt, env=env)
    folder = dump / "checkpoint"
    writing = _kill_in_the_second_save(proc, gate, folder)
    assert proc.returncode == -signal.SIGKILL
    assert writing == 4 and not (folder / "step-4").exists()
    newest = _newest_complete(folder)
    assert newest == 2

    resumed = run_exact("killed", steps, *ckpt, "--checkpoint.keep_latest_k=2", dump=dump)
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {folder / f'step-{newest}'} (step {newest})" in (
        resumed.proc.stderr
    )
    assert sorted(resumed.losses) == list(range(newest + 1, REFERENCE_STEPS + 1))
    for step, loss in resumed.losses.items():
        assert loss == reference.losses[step], step
    assert not list(folder.glob("*.tmp"))  # the half-written save was cleaned up
    last = REFERENCE_STEPS - REFERENCE_STEPS % 2
    assert _complete_steps(folder) == [last - 2, last]  # keep_latest_k=2


def test_async_checkpoint_is_published_when_complete(
    reference, run_exact, exact_args, tmp_path, titan_process
):
    """Save at step 4 (async), next at 8: a kill -9 in between resumes from step 4.

    The step gate holds the run at the start of step 6 until step-4 is published (a
    run that publishes only at its next save would be refused there by the gate's
    deadline), and the test kills it there.
    """
    dump = tmp_path / "async"
    ckpt = [
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=4",
        "--checkpoint.async_mode=async",
    ]
    steps = f"--training.steps={REFERENCE_STEPS}"
    folder = dump / "checkpoint"
    env, gate = gated_env(tmp_path, STEP_GATE, at=6, after=folder / "step-4")
    proc = titan_process(*exact_args, f"--job.dump_folder={dump}", steps, *ckpt, env=env)
    wait_for_file(gate / "reached", proc)
    os.kill(proc.pid, signal.SIGKILL)  # before step 8's save: the old code published step 4 there
    proc.wait()
    assert _complete_steps(folder) == [4]

    resumed = run_exact("async", steps, *ckpt, dump=dump)
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {folder / 'step-4'} (step 4)" in resumed.proc.stderr
    for step, loss in resumed.losses.items():
        assert loss == reference.losses[step], step
