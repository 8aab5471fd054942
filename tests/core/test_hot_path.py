"""The step loop's hot path: no host sync and no extra collective between logging steps.

The probe (``hot_path_probe.py``) runs the real trainer and counts, per step,
host synchronisations (``.item()``/``float()``... and ``tolist``/``numpy``)
and collectives (``torch.distributed`` ops and DTensor's functional
collectives). On a GPU each host sync stalls the queue of kernels, and each
collective beyond FSDP's own is exposed latency; both must happen on logging
steps only.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from titan.core.gc_schedule import GarbageCollection
from titan.core.grad_norm import clip_grad_norm_

PROBE = Path(__file__).resolve().parent / "hot_path_probe.py"
TINY = [
    "model.flavor=debug",
    "training.seq_len=64",
    "training.local_batch_size=2",
]
SYNCS = ("aten._local_scalar_dense", "Tensor.tolist", "Tensor.numpy")
FSDP_OWN = {"c10d._allgather_base_", "c10d._reduce_scatter_base_"}


def probe(tmp_path: Path, nproc: int, *overrides: str) -> list[dict]:
    """Run the probe on ``nproc`` ranks; the records of every rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    out = tmp_path / "counts.json"
    args = [str(PROBE), str(out), str(tmp_path / "dump"), *TINY, *overrides]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
        cmd += ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", *args]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    paths = [out] + [Path(f"{out}.rank{r}") for r in range(1, nproc)]
    return [json.loads(p.read_text()) for p in paths]


def syncs(counts: dict[str, int]) -> int:
    return sum(counts.get(name, 0) for name in SYNCS)


def test_one_process_reads_the_device_on_logging_steps_only(tmp_path: Path) -> None:
    (record,) = probe(tmp_path, 1, "training.steps=6", "metrics.log_freq=3")
    assert record["log_steps"] == [1, 3, 6]
    steps = {int(s): c for s, c in record["steps"].items()}
    for step in (2, 4, 5):
        assert steps.get(step, {}) == {}, (step, steps.get(step))
    # A logging step reads its values: loss and grad norm, and the non-finite gradient count.
    for step in (3, 6):
        assert steps[step] == {"aten._local_scalar_dense": 3}, (step, steps[step])


def test_two_fsdp_ranks_add_no_collective_between_logging_steps(tmp_path: Path) -> None:
    records = probe(tmp_path, 2, "training.steps=5", "metrics.log_freq=2")
    assert records[0]["log_steps"] == [1, 2, 4, 5]
    assert records[1]["log_steps"] == []  # only rank 0 logs
    for rank, record in enumerate(records):
        steps = {int(s): c for s, c in record["steps"].items()}
        quiet = steps[3]  # the one step that is not logged
        assert syncs(quiet) == 0, (rank, quiet)
        # FSDP's all-gathers and reduce-scatters, the gradient norm's single all-reduce
        # (clipping needs the global norm every step, as in torchtitan), and the stop
        # agreement (a non-blocking 4-byte CPU all-reduce on its own gloo group).
        assert set(quiet) == FSDP_OWN | {"funcol.all_reduce", "stop_agreement.poll"}, (rank, quiet)
        assert quiet["stop_agreement.poll"] == 1, (rank, quiet)
        for step, counts in steps.items():
            assert counts["funcol.all_reduce"] == 1, (rank, step, counts)  # norm reduced once
            logged = step in (1, 2, 4, 5)
            # One all-reduce carries all of a logging step's values; none otherwise.
            assert counts.get("c10d.allreduce_", 0) == int(logged), (rank, step, counts)
            if logged and step > 1:
                assert counts["aten._local_scalar_dense"] == 3, (rank, step, counts)


def test_clipping_with_one_norm_is_torchs_clipping() -> None:
    """Same norm, same clipped gradients, bit for bit, as ``torch.nn.utils.clip_grad_norm_``."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b, strict=True):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    for max_norm in (0.5, 100.0):
        ours = clip_grad_norm_(a, max_norm)
        theirs = torch.nn.utils.clip_grad_norm_(b, max_norm, foreach=True)
        assert torch.equal(ours, theirs)
        for p, q in zip(a, b, strict=True):
            assert torch.equal(p.grad, q.grad)
    before = [p.grad.clone() for p in a]
    norm = clip_grad_norm_(a, 0.0)  # 0: only measure
    assert norm > 0 and all(torch.equal(p.grad, g) for p, g in zip(a, before, strict=True))


def test_garbage_is_collected_every_50_steps_only() -> None:
    collections: list[int] = []
    step = 0

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(step)

    was_enabled = gc.isenabled()
    gc.enable()
    gc.callbacks.append(seen)
    try:
        with GarbageCollection() as schedule:
            assert not gc.isenabled()
            collections.clear()  # the one on entering
            for step in range(1, 121):
                schedule.step(step)
                [[] for _ in range(2000)]  # noqa: B018 (garbage that would trigger gc)
        assert gc.isenabled()  # given back
    finally:
        gc.callbacks.remove(seen)
        if not was_enabled:
            gc.disable()
    assert collections == [50, 100]
