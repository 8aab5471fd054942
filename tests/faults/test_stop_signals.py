"""SIGTERM / SIGUSR1 / SIGUSR2 at a random step: checkpoint, exit 75, resume bitwise equal.

1 process (in `titan` itself) and 2 ranks (torchrun wrapper, FSDP2, gloo), a few
seeds that pick the step at which the signal comes. Also: a second signal during the
stop checkpoint, and the signal delivered to every process at once (what Slurm does).
"""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path

import pytest
from fault_helpers import REFERENCE_STEPS, wait_for_steps
from gates import SAVE_GATE, gated_env, wait_for_file

from titan.core.folders import complete_checkpoints

STOPPED = re.compile(
    r"stopped at step (\d+) on (SIG\w+): checkpoint (\S+) complete ([\d.]+) s after the signal"
)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *_descendants(kid)]
    return out


CASES = [
    # id, processes, signal, delivery, seed
    pytest.param(1, signal.SIGTERM, "titan", 1, id="1proc-SIGTERM"),
    pytest.param(1, signal.SIGUSR1, "twice", 2, id="1proc-SIGUSR1-twice"),
    pytest.param(2, signal.SIGTERM, "titan", 3, id="2ranks-SIGTERM"),
    pytest.param(2, signal.SIGUSR2, "everyone", 4, id="2ranks-SIGUSR2-every-process"),
]


@pytest.mark.parametrize("nproc,sig,delivery,seed", CASES)
def test_signal_checkpoints_exits_75_and_resumes_bitwise(
    nproc, sig, delivery, seed, reference, run_exact, exact_args, tmp_path, titan_process
):
    dump = tmp_path / "run"
    args = [
        *exact_args,
        f"--job.dump_folder={dump}",
        f"--training.steps={REFERENCE_STEPS}",
        f"--nproc={nproc}",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=100",  # only the stop checkpoint (and the last one)
    ]
    env, gate = None, tmp_path
    if delivery == "twice":  # the stop checkpoint (the run's first save) waits mid-save
        env, gate = gated_env(tmp_path, SAVE_GATE, at=1)
    proc = titan_process(*args, env=env)
    wait_for_steps(proc, dump, random.Random(seed).randint(1, 6))
    if delivery == "everyone":  # Slurm signals every process of the job step at once
        for pid in [proc.pid, *_descendants(proc.pid)]:
            os.kill(pid, sig)
    else:
        os.kill(proc.pid, sig)
    if delivery == "twice":  # a second signal while the checkpoint is being written
        wait_for_file(gate / "saving", proc)
        os.kill(proc.pid, sig)
        (gate / "go").touch()
    # 75, sysexits.h's EX_TEMPFAIL, as docs/reliability.md documents: the value Slurm requeue and
    # SageMaker spot read, so the expected value is that, not titan's own constant.
    assert proc.wait(timeout=300) == os.EX_TEMPFAIL == 75, proc.log.read_text()

    log = proc.log.read_text()
    found = STOPPED.findall(log)
    assert len(found) == 1, log  # one line, from rank 0
    step, name, path, _seconds = found[0]
    step = int(step)
    assert name == sig.name
    assert Path(path) == dump / "checkpoint" / f"step-{step}"
    assert [s for s, _ in complete_checkpoints(dump / "checkpoint")] == [step]
    assert step < REFERENCE_STEPS
    assert "Traceback" not in log and "ChildFailedError" not in log

    resumed = run_exact("resumed", *args[1:], dump=dump)
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {path} (step {step})" in resumed.proc.stderr
    assert sorted(resumed.losses) == list(range(step + 1, REFERENCE_STEPS + 1))
    for s, loss in resumed.losses.items():
        assert loss == reference.losses[s], s
