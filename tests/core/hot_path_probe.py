"""Per-rank probe of the hot-path test: what each training step asks of the device and the network.

``python hot_path_probe.py OUT.json DUMP_DIR [key=value ...]`` (one process) or under
``torchrun --nproc-per-node=N``. Builds the real ``Trainer`` and runs ``train()``
with every op below autograd observed (a ``TorchDispatchMode``), counting per step:

* host synchronisations: ``aten._local_scalar_dense`` (what ``.item()``,
  ``float()``, ``int()`` and ``bool()`` of a tensor dispatch to; on a GPU each
  waits for the device), and calls of ``Tensor.tolist`` / ``Tensor.numpy``;
* collectives: every ``c10d`` op (``torch.distributed`` calls: FSDP2's
  all-gathers and reduce-scatters, the metrics' all-reduce) and every call of
  a ``torch.distributed._functional_collectives`` function (DTensor's
  redistributions, e.g. the gradient norm's reduction). The latter are
  counted where DTensor calls them: ops that DTensor issues while handling an
  op are not seen by a dispatch mode (the mode is off inside its own handler).

On a GPU, CUDA's own sync debug mode also reports every synchronising CUDA
call (counted as ``cuda.sync``), including those made inside C++ ops.

Data loading is left out (it runs on the host, on host tensors). Rank 0 writes
``{"log_steps": [...], "steps": {step: {op: count}}}``; other ranks write
``OUT.json.rank<r>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter, defaultdict
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from titan.core import hookimpl

SYNC_OPS = {"aten._local_scalar_dense"}


class StepRecorder(TorchDispatchMode):
    """Counts host syncs and collectives, per training step, while ``on``."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.on = False
        self.counts: dict[int, Counter[str]] = defaultdict(Counter)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = str(func.overloadpacket)
        if self.on and (name in SYNC_OPS or name.startswith("c10d.")):
            self.counts[self.step][name] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def paused(self) -> Any:
        was, self.on = self.on, False
        try:
            yield
        finally:
            self.on = was


class Probe:
    """The plugin side: marks step starts and logging steps; pauses counting for data loading."""

    def __init__(self, recorder: StepRecorder) -> None:
        self.recorder = recorder
        self.log_steps: list[int] = []

    @hookimpl
    def titan_step_start(self, trainer: Any, step: int) -> None:
        self.recorder.step = step
        self.recorder.on = True

    @hookimpl
    def titan_log_metrics(self, step: int, metrics: dict, config: Any) -> None:
        self.log_steps.append(step)


def _counting(recorder: StepRecorder, label: str, original: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if recorder.on:
            recorder.counts[recorder.step][label] += 1
        return original(*args, **kwargs)

    return wrapped


def instrument(recorder: StepRecorder) -> None:
    """Count what a dispatch mode does not see: host reads without an op, DTensor's collectives."""
    import torch.distributed._functional_collectives as funcol

    for method in ("tolist", "numpy"):  # read tensors without dispatching an op
        setattr(
            torch.Tensor,
            method,
            _counting(recorder, f"Tensor.{method}", getattr(torch.Tensor, method)),
        )
    for name in dir(funcol):
        fn = getattr(funcol, name)
        if callable(fn) and name.startswith(("all_", "reduce_scatter", "broadcast", "permute")):
            setattr(funcol, name, _counting(recorder, f"funcol.{name}", fn))
    _count_stop_agreement(recorder)


def _count_stop_agreement(recorder: StepRecorder) -> None:
    """The ranks' agreement on a stop signal, counted as itself rather than as its parts.

    Once per step on several ranks, ``faults.StopAgreement.poll`` starts a 4-byte
    all-reduce of a CPU flag on its own gloo group without waiting for it and reads
    the previous round's result (already there): no device work, no device sync.
    The test allows exactly this beside FSDP's collectives (docs/reliability.md).
    """
    from titan.core import faults

    original = faults.StopAgreement.poll

    def poll(self: Any) -> int:
        with recorder.paused():
            result = original(self)
        if recorder.on and self._group is not None:
            recorder.counts[recorder.step]["stop_agreement.poll"] += 1
        return result

    faults.StopAgreement.poll = poll


class PausedLoader:
    """The trainer's data loader, with counting paused while it produces a batch."""

    def __init__(self, loader: Any, recorder: StepRecorder) -> None:
        self.loader = loader
        self.recorder = recorder

    def __iter__(self) -> Any:
        it = iter(self.loader)
        while True:
            with self.recorder.paused():
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch


def watch_cuda_syncs(recorder: StepRecorder) -> None:
    """Count CUDA's synchronisation warnings (``set_sync_debug_mode("warn")``) per step."""
    import warnings

    if not torch.cuda.is_available():
        return
    shown = warnings.showwarning

    def showwarning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if "synchronizing" in str(message):
            if recorder.on:
                recorder.counts[recorder.step]["cuda.sync"] += 1
            return
        shown(message, category, *args, **kwargs)

    warnings.showwarning = showwarning
    warnings.filterwarnings("always", message=".*synchronizing.*")
    torch.cuda.set_sync_debug_mode("warn")


def main() -> None:
    from titan.core.launch import prepare_job
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    out, dump, *pairs = sys.argv[1:]
    overrides = [tuple(p.split("=", 1)) for p in pairs]
    job = prepare_job(None, overrides=[*overrides, ("job.dump_folder", dump)])
    recorder = StepRecorder()
    probe = Probe(recorder)
    job.plugins.pm.register(probe, name="hot-path-probe")
    job.plugins._callers.clear()
    trainer = Trainer(job)
    trainer.dataloader = PausedLoader(trainer.dataloader, recorder)
    instrument(recorder)
    watch_cuda_syncs(recorder)
    with recorder:
        trainer.train()
        recorder.on = False
    rank = int(os.environ.get("RANK", "0"))
    path = out if rank == 0 else f"{out}.rank{rank}"
    with open(path, "w") as f:
        json.dump(
            {
                "log_steps": probe.log_steps,
                "steps": {s: dict(c) for s, c in recorder.counts.items()},
                "last_loss": trainer.last_loss,
            },
            f,
        )
    shutdown_parallel()


if __name__ == "__main__":
    main()
