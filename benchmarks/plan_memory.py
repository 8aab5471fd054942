"""``titan plan``'s memory model against measured steps: plan peak vs measured peak, per case.

    uv run python benchmarks/plan_memory.py                      # every case (CPU, minutes)
    uv run python benchmarks/plan_memory.py --cases debug-512 tp2-512
    uv run python benchmarks/plan_memory.py --detail             # + the measured peak by category

Each measurement is a fresh process (``torchrun`` for 2 ranks, as
benchmarks/memory.py does) that builds titan's real ``Trainer`` for the case,
runs one step (so the AdamW state exists), then measures the next step under
torch's ``MemTracker`` (one process) or ``FSDPMemTracker`` (FSDP): the peak
of live tensor bytes over forward, backward and optimizer step, the worse
rank of two. The plan is :func:`titan.core.memory_plan.plan_memory` for the
same job and layout, computed in this process without torch. Nothing is
hard-coded: each row is a fresh plan against a fresh measurement.

The model shapes: ``debug`` (Llama 3's registered debug flavor) and two
small custom Llama 3 shapes written as ``titan_model.json`` args files
(``wide``: dim 512, 8 heads over 2 kv heads, vocabulary 8192; ``mha``: dim
384, 6 heads without grouping, 8 blocks, vocabulary 4096).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any] | None] = {
    "debug": None,  # the registered llama3/debug flavor
    # Llama 3 8B's width and vocabulary cut to 2 blocks (benchmarks/head_memory.py): the
    # output projection then makes the step's largest activation, as in the full model.
    "8B-2L": {
        "dim": 4096,
        "n_layers": 2,
        "n_heads": 32,
        "n_kv_heads": 8,
        "vocab_size": 128256,
        "multiple_of": 1024,
        "ffn_dim_multiplier": 1.3,
        "rope_theta": 500000.0,
        "max_seq_len": 8192,
    },
    "wide": {
        "dim": 512,
        "n_layers": 4,
        "n_heads": 8,
        "n_kv_heads": 2,
        "vocab_size": 8192,
        "multiple_of": 256,
        "rope_theta": 500000.0,
        "max_seq_len": 2048,
    },
    "mha": {
        "dim": 384,
        "n_layers": 8,
        "n_heads": 6,
        "n_kv_heads": None,
        "vocab_size": 4096,
        "multiple_of": 128,
        "ffn_dim_multiplier": 1.3,
        "rope_theta": 500000.0,
        "max_seq_len": 2048,
    },
}


@dataclass(frozen=True)
class Case:
    name: str
    shape: str = "debug"
    seq: int = 512
    batch: int = 1
    ac: str = "none"
    """none, full, op (selective per op) or a layer frequency ("2")."""
    nproc: int = 1
    tp: int = 1
    plugins: tuple[str, ...] = field(default=())

    def plugin_list(self) -> list[str]:
        return [
            *self.plugins,
            *(["ac"] if self.ac != "none" else []),
            *(["tp"] if self.tp > 1 else []),
        ]


CASES: tuple[Case, ...] = (
    Case("debug-512", "debug", 512),
    Case("debug-2048", "debug", 2048),
    Case("debug-2048-full", "debug", 2048, ac="full"),
    Case("debug-2048-op", "debug", 2048, ac="op"),
    Case("debug-2048-every2", "debug", 2048, ac="2"),
    Case("wide-512", "wide", 512),
    Case("wide-2048-op", "wide", 2048, ac="op"),
    Case("mha-512-b2", "mha", 512, batch=2),
    Case("mha-2048-full", "mha", 2048, ac="full"),
    Case("fsdp2-debug-512", "debug", 512, nproc=2),
    Case("fsdp2-debug-2048", "debug", 2048, nproc=2),
    Case("fsdp2-wide-2048-full", "wide", 2048, ac="full", nproc=2),
    Case("fsdp2-mha-512-op", "mha", 512, ac="op", nproc=2),
    Case("tp2-debug-512", "debug", 512, nproc=2, tp=2),
    Case("tp2-wide-2048", "wide", 2048, nproc=2, tp=2),
    Case("fp8ag-debug-512", "debug", 512, nproc=2, plugins=("fp8", "fp8-ag")),
)
BY_NAME = {c.name: c for c in CASES}


def shape_flavor(shape: str, folder: Path) -> str:
    """``debug``, or the path of a ``titan_model.json`` args file written into ``folder``."""
    args = SHAPES[shape]
    if args is None:
        return shape
    path = folder / f"{shape}_titan_model.json"
    path.write_text(json.dumps({"args": args}))
    return str(path)


def overrides(case: Case, folder: Path) -> list[tuple[str, str]]:
    out = [
        ("model.flavor", shape_flavor(case.shape, folder)),
        ("training.seq_len", str(case.seq)),
        ("training.local_batch_size", str(case.batch)),
        ("job.dump_folder", str(folder / "dump")),
        ("launch.nproc_per_node", str(case.nproc)),
    ]
    if case.tp > 1:
        out.append(("parallelism.tensor_parallel_degree", str(case.tp)))
    if case.ac == "full":
        out.append(("ac.mode", "full"))
    elif case.ac != "none":
        out += [("ac.mode", "selective"), ("ac.selective_ac_option", case.ac)]
    if "fp8" in case.plugins:
        out.append(("fp8.recipe_name", "tensorwise"))
    return out


# --- the plan (this process, no torch) -------------------------------------------


def plan(case: Case, folder: Path) -> Any:
    from titan.core.launch import prepare_job
    from titan.core.layout import GIB, Device, LaunchLayout
    from titan.core.memory_plan import plan_memory

    job = prepare_job(None, case.plugin_list(), overrides(case, folder), validate=False)
    layout = LaunchLayout(1, case.nproc, Device("cpu", "cpu", 64 * GIB), "this machine")
    return plan_memory(job, layout)


# --- one measurement (a worker process) -------------------------------------------


def worker(case: Case, folder: Path) -> None:
    from titan.core.launch import prepare_job
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    job = prepare_job(None, case.plugin_list(), overrides(case, folder))
    trainer = Trainer(job)
    data = iter(trainer.dataloader)
    step = trainer.train_step
    step([next(data)])  # the optimizer state exists from here on
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory import step_tracker  # benchmarks/memory.py: the same measurement

    tracker = step_tracker(trainer)
    batch = next(data)
    with tracker:
        step([batch])
    peak = tracker.get_tracker_snapshot("peak")
    by_kind: dict[str, int] = {}
    for per_device in peak.values():
        for kind, value in per_device.items():
            by_kind[str(getattr(kind, "value", kind))] = (
                by_kind.get(str(getattr(kind, "value", kind)), 0) + value
            )
    result = {"case": case.name, "rank": trainer.parallel.rank, "peak": by_kind.get("Total", 0)}
    result["by_kind"] = by_kind
    print("RESULT " + json.dumps(result) + "\n", end="", flush=True)  # one write per rank
    shutdown_parallel()


def measure(case: Case) -> list[dict]:
    me = [os.path.abspath(__file__), "--worker", json.dumps(asdict(case))]
    if case.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={case.nproc}"]
        cmd += ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", *me]
    else:
        cmd = [sys.executable, *me]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    # Two ranks print at once: their lines may interleave, so read every RESULT object
    # wherever it starts.
    decoder, results, text = json.JSONDecoder(), [], proc.stdout
    at = text.find("RESULT ")
    while at != -1:
        with contextlib.suppress(ValueError):  # a line cut by the other rank's: skipped
            results.append(decoder.raw_decode(text, at + len("RESULT "))[0])
        at = text.find("RESULT ", at + 1)
    if proc.returncode or len(results) != case.nproc:
        raise RuntimeError(f"[{case.name}] failed:\n{proc.stderr[-3000:]}")
    return results


def compare(case: Case) -> dict[str, Any]:
    """The plan and the measurement of one case: peaks in bytes, the plan's phase, the error."""
    with tempfile.TemporaryDirectory() as tmp:
        planned = plan(case, Path(tmp))
    measured = measure(case)
    worst = max(measured, key=lambda r: r["peak"])
    error = 100 * (planned.peak - worst["peak"]) / worst["peak"]
    return {
        "case": case.name,
        "plan": planned.peak,
        "phase": planned.peak_phase,
        "measured": worst["peak"],
        "error_pct": error,
        "by_kind": worst["by_kind"],
        "plan_terms": planned.terms(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="*", default=[c.name for c in CASES], choices=list(BY_NAME)
    )
    parser.add_argument("--detail", action="store_true", help="also the measured peak by kind")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case = Case(
            **{**json.loads(args.worker), "plugins": tuple(json.loads(args.worker)["plugins"])}
        )
        with tempfile.TemporaryDirectory() as tmp:
            worker(case, Path(tmp))
        return
    mib = 2**20
    print(f"{'case':<22} {'plan MiB':>9} {'measured MiB':>13} {'error':>7}  plan's peak phase")
    errors = []
    for name in args.cases:
        row = compare(BY_NAME[name])
        errors.append(abs(row["error_pct"]))
        print(
            f"{row['case']:<22} {row['plan'] / mib:>9.1f} {row['measured'] / mib:>13.1f} "
            f"{row['error_pct']:>+6.1f}%  {row['phase']}",
            flush=True,
        )
        if args.detail:
            kinds = ", ".join(f"{k} {v / mib:.1f}" for k, v in row["by_kind"].items() if v)
            terms = ", ".join(f"{k} {v / mib:.1f}" for k, v in row["plan_terms"].items() if v)
            print(f"    measured: {kinds}\n    plan:     {terms}")
    if errors:
        print(f"largest error {max(errors):.1f}% over {len(errors)} cases")


if __name__ == "__main__":
    main()
