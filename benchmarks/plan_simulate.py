"""``titan plan``'s memory model against torch's simulation of a large run without its hardware.

    uv run python benchmarks/plan_simulate.py                    # Llama 3 8B, 8 ranks, seq 8192
    uv run python benchmarks/plan_simulate.py --cases 8b-op      # one case
    uv run python benchmarks/plan_simulate.py --detail           # + the simulated peak by kind

No GPU and no cluster: each case is a fresh process that joins a *fake*
process group of 8 ranks as rank 0 (``FakeStore`` +
``dist.init_process_group("fake")``: collectives return at once, with no
data), builds titan's real model through the trainer's own plugin phases
(:meth:`titan.core.trainer.Trainer.build_model`: activation checkpointing,
then titan's FSDP2 units over the 8-rank ``dp_shard`` mesh with bf16 mixed
precision) under ``FakeTensorMode`` (tensors with shapes, dtypes and devices
but no storage), runs one training step with titan's own
:meth:`~titan.core.trainer.Trainer.train_step` (forward, loss, backward,
gradient clipping, AdamW step) so the optimizer state exists, then runs the
next step under torch's ``FSDPMemTracker`` (the same tracker
benchmarks/plan_memory.py measures real CPU runs with): the peak of live
tensor bytes on rank 0. This is torchtitan's former ``estimation.py``
recipe (``--memory_estimation.enabled``) applied to titan's trainer.

The plan is :func:`titan.core.memory_plan.plan_memory` for the same job on
the same device kind, computed in the parent process without torch; the GPU
plan (8 x H100) is printed beside it. Nothing is hard-coded: each row is a
fresh plan against a fresh simulation.

What differs from a real run, and why:

* **fake CPU tensors**: the trainer puts a process on the GPU only when
  ``torch.cuda.is_available()``, and FSDP2 on a ``cuda`` mesh creates CUDA
  streams, which need a driver. So the simulation runs on fake CPU tensors.
  Bytes per tensor are the same on any device; what the CPU changes is the
  attention kernel (``_scaled_dot_product_flash_attention_for_cpu``, which
  keeps the same output and float32 log-sum-exp as CUDA's flash kernel) and,
  under per-op AC, that torchtitan's save list names only the CUDA attention
  kernels, so on a CPU attention is recomputed. The plan for the same job on
  a CPU device accounts for exactly that; the H100 column is the plan with
  the attention output kept.
* **weights are not initialised**: the model is materialised with
  ``to_empty`` only. torch's ``trunc_normal_`` draws by rejection sampling,
  which reads values (``.item()``, ``mask.any()``) that fake tensors do not
  have; the values do not change what is allocated (the rotary table is a
  buffer of the same shape either way).
* **tensor parallel and float8 fail** under fake tensors (``tp`` and
  ``plugins`` are accepted so that a later torch can be tried): FSDP2 slices
  the 2-D mesh's real rank tensor in fake mode, and FSDPMemTracker cannot
  flatten torchao's float8 weight (``if self._precomputed_scale:``); see
  docs/plan.md.
* **the trainer's process-wide parts** (the gloo stop agreement, the data
  loader, the checkpointer) are not built: they need 8 real ranks or files,
  and hold no device memory. The micro-batch is random token ids of the job's
  shape, made in fake mode.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GIB = 2**30


def _sibling(name: str) -> Any:
    """A benchmark module next to this one (benchmarks/ is not a package)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return module


plan_memory_bench = _sibling("plan_memory")  # job overrides and model shapes
memory_bench = _sibling("memory")  # step_tracker: the tracker choice of every measurement


@dataclass(frozen=True)
class SimCase:
    name: str
    shape: str = "8B"
    """A registered llama3 flavor ("8B", "debug"), or a shape of benchmarks/plan_memory.py."""
    seq: int = 8192
    batch: int = 1
    ac: str = "none"
    """none, full, op (selective per op) or a layer frequency ("2")."""
    ranks: int = 8
    tp: int = 1
    plugins: tuple[str, ...] = ()


CASES: tuple[SimCase, ...] = (
    SimCase("8b-none", ac="none"),
    SimCase("8b-op", ac="op"),
    SimCase("8b-full", ac="full"),
)
BY_NAME = {c.name: c for c in CASES}


def job_overrides(case: SimCase, folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The plugins and overrides of ``case``: benchmarks/plan_memory.py's, for ``ranks`` processes.

    Weights are initialised in place on each rank (no full copy on rank 0 to broadcast):
    the fake world has no rank 0 copy to send, and the plan does not depend on it.
    """
    shaped = case.shape in plan_memory_bench.SHAPES
    base = plan_memory_bench.Case(
        case.name,
        case.shape if shaped else "debug",
        case.seq,
        case.batch,
        case.ac,
        case.ranks,
        case.tp,
        tuple(case.plugins),
    )
    out = plan_memory_bench.overrides(base, folder)
    if not shaped:
        out = [("model.flavor", case.shape) if k == "model.flavor" else (k, v) for k, v in out]
    out.append(("parallelism.init_full_model_on_rank0", "false"))
    return base.plugin_list(), out


# --- the plan (this process, no torch) -------------------------------------------


def plan(case: SimCase, folder: Path, device: str = "cpu") -> Any:
    """``plan_memory`` for ``case`` on ``ranks`` devices of one node: "cpu" or "H100"."""
    from titan.core.launch import prepare_job
    from titan.core.layout import Device, LaunchLayout
    from titan.core.memory_plan import plan_memory

    plugins, overrides = job_overrides(case, folder)
    job = prepare_job(None, plugins, overrides, validate=False)
    if device == "cpu":
        dev = Device("cpu", "cpu", 64 * GIB)
    else:
        dev = Device("cuda", "H100 SXM 80GB", 80 * GIB, True)
    return plan_memory(job, LaunchLayout(1, case.ranks, dev, "simulated"))


# --- one simulation (a worker process) -------------------------------------------


def peak_by_kind(tracker: Any) -> dict[str, int]:
    """A memory tracker's peak, summed over devices, by kind ("Activation", ..., "Total")."""
    by_kind: dict[str, int] = {}
    for per_device in tracker.get_tracker_snapshot("peak").values():
        for kind, value in per_device.items():
            name = str(getattr(kind, "value", kind))
            by_kind[name] = by_kind.get(name, 0) + value
    return by_kind


def materialise_unsharded(model: Any, device: Any) -> None:
    """``model.to_empty(device)`` for a model that no FSDP or TP wrapped, under fake mode.

    Parameters are replaced, not swapped: fake mode's tensor converter keeps a weak
    reference to each meta parameter, which makes ``to_empty``'s ``swap_tensors`` refuse
    it ("Couldn't swap Embedding.weight"); DTensor parameters are swapped without trouble.
    """
    import torch

    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            fresh = torch.empty_like(p, device=device)
            module._parameters[name] = torch.nn.Parameter(fresh, p.requires_grad)
        for name, b in list(module.named_buffers(recurse=False)):
            module._buffers[name] = torch.empty_like(b, device=device)


def simulate(case: SimCase, folder: Path) -> dict[str, Any]:
    """Rank 0 of a fake ``ranks``-process world: one tracked step of titan's trainer, faked.

    Returns the tracker's peak (bytes) and the peak by kind. Call once per process: the fake
    process group is the process's default group.
    """
    import torch
    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from titan.core.checks import model_args
    from titan.core.launch import prepare_job
    from titan.core.loss_function import LossFunction
    from titan.core.lr_schedule import build_lr_scheduler
    from titan.core.nonfinite import NonFiniteGuard
    from titan.core.parallel import init_parallel
    from titan.core.trainer import Trainer, TrainState

    class FakeWorldTrainer(Trainer):
        """titan's Trainer on rank 0 of a fake world: its model, optimizer and step, unchanged.

        ``Trainer.__init__`` also builds a gloo stop agreement (a real 8-rank rendezvous), the
        data loader and the checkpointer, none of which hold device memory; this keeps the
        rest of it: the model through the plugin phases, the optimizer, the LR schedule and
        the non-finite guard that ``train_step`` uses.
        """

        def __init__(self, job: Any, parallel: Any) -> None:
            self.job = job
            self.config = c = job.config
            self.hook = job.plugins.hook
            self.parallel = parallel
            self.device = parallel.device
            self.dump_folder = folder
            self.loss_terms = {}
            self.loss = LossFunction()
            self.model_args = model_args(job)
            self.model = self.build_model()
            self.optimizer = self._build_optimizer()
            self.nonfinite = NonFiniteGuard(c.training.nonfinite, self.optimizer, self.device)
            self.lr_scheduler = build_lr_scheduler(self.optimizer, c.lr_scheduler, c.training.steps)
            self.train_state = TrainState()

        def _init_weights(self, model: torch.nn.Module) -> None:
            """Materialise only: fake tensors have no values for ``trunc_normal_`` to check."""
            if getattr(self, "fsdp_applied", False) or self.parallel.world_size > 1:
                model.to_empty(device=self.device)
            else:
                materialise_unsharded(model, self.device)

    os.environ.update(WORLD_SIZE=str(case.ranks), RANK="0", LOCAL_RANK="0")
    dist.init_process_group("fake", rank=0, world_size=case.ranks, store=FakeStore())
    plugins, overrides = job_overrides(case, folder)
    job = prepare_job(None, plugins, overrides, validate=False)
    # The mesh is built from real tensors (DeviceMesh reads its rank list with tolist()).
    p = job.config.parallelism
    parallel = init_parallel(
        p.data_parallel_replicate_degree, p.data_parallel_shard_degree, p.tensor_parallel_degree
    )
    with FakeTensorMode():
        trainer = FakeWorldTrainer(job, parallel)
        vocab = trainer.model_args.vocab_size

        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            shape = (case.batch, case.seq)
            return torch.randint(0, vocab, shape), torch.randint(0, vocab, shape)

        trainer.train_step([batch()])  # the optimizer state exists from here on
        tracker = memory_bench.step_tracker(trainer)
        tracked = batch()
        with tracker:
            trainer.train_step([tracked])
        by_kind = peak_by_kind(tracker)
    device = trainer.device.type
    dist.destroy_process_group()
    return {
        "case": case.name,
        "device": device,
        "peak": by_kind.get("Total", 0),
        "by_kind": by_kind,
    }


def run_simulation(case: SimCase) -> dict[str, Any]:
    """:func:`simulate` in a fresh process (one fake world per process)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(asdict(case))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"[{case.name}] simulation failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].split("RESULT ", 1)[1])


def compare(case: SimCase) -> dict[str, Any]:
    """The simulation of one case against the plan for the device kind it ran on.

    The plan on H100s is returned too: on a CPU the two differ under per-op AC only (the
    CUDA attention kernels are on torchtitan's save list, the CPU one is not).
    """
    simulated = run_simulation(case)
    with tempfile.TemporaryDirectory() as tmp:
        on_cpu = plan(case, Path(tmp))
        on_gpu = plan(case, Path(tmp), "H100")
    planned = on_cpu if simulated["device"] == "cpu" else on_gpu
    error = 100 * (planned.peak - simulated["peak"]) / simulated["peak"]
    return {
        "case": case.name,
        "device": simulated["device"],
        "simulated": simulated["peak"],
        "plan": planned.peak,
        "plan_gpu": on_gpu.peak,
        "phase": planned.peak_phase,
        "error_pct": error,
        "by_kind": simulated["by_kind"],
        "plan_terms": planned.terms(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="*", default=[c.name for c in CASES], choices=list(BY_NAME)
    )
    parser.add_argument("--detail", action="store_true", help="also the simulated peak by kind")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case = SimCase(**json.loads(args.worker))
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(simulate(case, Path(tmp))), flush=True)
        return
    print(
        f"{'case':<10} {'device':<6} {'simulated GiB':>13} {'planned GiB':>11} {'error':>7} "
        f"{'plan 8 x H100':>13}  plan's peak phase"
    )
    errors = []
    for name in args.cases:
        row = compare(BY_NAME[name])
        errors.append(abs(row["error_pct"]))
        print(
            f"{row['case']:<10} {row['device']:<6} {row['simulated'] / GIB:>13.2f} {row['plan'] / GIB:>11.2f} "
            f"{row['error_pct']:>+6.1f}% {row['plan_gpu'] / GIB:>13.2f}  {row['phase']}",
            flush=True,
        )
        if args.detail:
            kinds = ", ".join(f"{k} {v / GIB:.2f}" for k, v in row["by_kind"].items() if v)
            terms = ", ".join(f"{k} {v / GIB:.2f}" for k, v in row["plan_terms"].items() if v)
            print(f"    simulated: {kinds}\n    plan:      {terms}")
    if errors:
        print(f"largest error {max(errors):.1f}% over {len(errors)} cases")


if __name__ == "__main__":
    main()
