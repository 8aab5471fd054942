"""AdamW against torchao's low-bit AdamW (plugin lowbit-adamw): loss, state size, speed.

    uv run python benchmarks/optimizer_state.py                   # 200 steps, AdamW, 8-bit, 4-bit
    uv run python benchmarks/optimizer_state.py --steps 40 --optimizers AdamW AdamW8bit

Each optimizer trains the debug Llama 3 (6 blocks, dim 256, vocab 2048) in a fresh
process, in float32, on the bundled corpus (tinyshakespeare), with the same seed and
data order, so the runs differ only by the optimizer. For each it prints:

* the loss of the last step and the mean loss of the last 20 steps (per-batch losses
  of this tiny model scatter by a few percent, the mean is what to compare), and the
  mean's relative difference from AdamW's (the goal: within 1%);
* the optimizer state in bytes per parameter, measured on the trained optimizer (the
  storage of every state tensor: codes, block scales and quantization maps of the
  low-bit moments, float32 moments of the tensors torchao leaves unquantized, the step
  counters) next to what the optimizer's plugin reports to ``titan plan``;
* tokens per second over the steps after the first (the low-bit step is compiled on
  step 1, which costs about a minute on CPU), with one torch thread unless
  ``OMP_NUM_THREADS`` is set.

Nothing here asserts; tests/optims/test_optim_lowbit.py does, on shorter runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PLUGIN = {"AdamW": [], "AdamW8bit": ["lowbit-adamw"], "AdamW4bit": ["lowbit-adamw"]}
LAST = 20
"""The last steps averaged: a mean over 20 batches is steadier than one batch's loss."""


def state_nbytes(optimizer: Any) -> int:
    """Bytes the optimizer's state really holds: every tensor, a low-bit one by its parts.

    torchao's ``OptimState8bit``/``OptimState4bit`` are wrapper tensors whose own
    ``nbytes`` is that of the float tensor they stand for; their storage is ``codes``
    (uint8), ``scale`` (float32 per block) and ``qmap`` (the 256- or 16-entry map).
    Sharded state (DTensor) counts this rank's shard.
    """
    from torch.distributed.tensor import DTensor

    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, DTensor):
                value = value.to_local()
            parts = [getattr(value, n) for n in ("codes", "scale", "qmap") if hasattr(value, n)]
            total += sum(t.nbytes for t in parts) if parts else value.nbytes
    return total


def worker(name: str, steps: int, seq_len: int, batch: int, out: Path) -> None:
    """Train with optimizer ``name`` in this process; write its figures to ``out`` (JSON)."""
    from titan.core.checks import optimizer_state_bytes
    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    dump = out.parent / name  # in the parent's temporary folder, removed with it
    job = prepare_job(
        None,
        plugins=PLUGIN[name],
        overrides=[
            ("model.flavor", "debug"),
            ("optimizer.name", name),
            ("training.steps", str(steps)),
            ("training.seq_len", str(seq_len)),
            ("training.local_batch_size", str(batch)),
            ("training.mixed_precision_param", "float32"),
            ("metrics.log_freq", "1"),
            ("job.dump_folder", str(dump)),
        ],
    )
    trainer = Trainer(job)
    trainer.train()
    records = [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines()]
    n_params = sum(p.numel() for p in trainer.model.parameters())
    later = [r for r in records if r["step"] > 1]
    tokens = seq_len * batch  # per step: one process, no gradient accumulation
    out.write_text(
        json.dumps(
            {
                "losses": [r["loss"] for r in records],
                "reported": optimizer_state_bytes(job),
                "measured": state_nbytes(trainer.optimizer) / n_params,
                "tokens_per_s": tokens * len(later) / sum(r["step_time"] for r in later),
                "params": n_params,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--optimizers", nargs="+", default=list(PLUGIN), choices=list(PLUGIN))
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.steps, a.seq_len, a.batch, a.out)
        return
    if a.steps <= LAST:
        ap.error(f"--steps must be above {LAST} (the mean is over the last {LAST} steps)")

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.optimizers:
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, __file__, "--worker", name, "--out", str(out)]
            cmd += ["--steps", str(a.steps), "--seq-len", str(a.seq_len), "--batch", str(a.batch)]
            print(f"training {name} for {a.steps} steps ...", file=sys.stderr, flush=True)
            # One torch thread per run unless OMP_NUM_THREADS says otherwise: on a small
            # shared machine, threads that spin while other processes hold the cores made
            # steps 10x slower (measured on 2 cores); one thread keeps the runs comparable.
            env = {"OMP_NUM_THREADS": "1", **os.environ}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            results[name] = json.loads(out.read_text())

    base = results.get("AdamW")
    base_mean = sum(base["losses"][-LAST:]) / LAST if base else None
    first = next(iter(results.values()))
    print(
        f"debug Llama 3 ({first['params']:,} parameters), float32, {a.steps} steps, "
        f"seq {a.seq_len} x batch {a.batch}, tinyshakespeare"
    )
    print()
    print(
        f"| optimizer | final loss | mean loss, last {LAST} | vs AdamW | "
        "state B/param (measured) | state B/param (plugin) | tokens/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        mean = sum(r["losses"][-LAST:]) / LAST
        rel = f"{(mean - base_mean) / base_mean:+.2%}" if base_mean else "-"
        print(
            f"| {name} | {r['losses'][-1]:.4f} | {mean:.4f} | {rel} | {r['measured']:.3f} | "
            f"{r['reported']:.3f} | {r['tokens_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
