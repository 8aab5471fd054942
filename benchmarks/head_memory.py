"""Peak step memory and speed of the output projection + loss: titan, titan with chunked-loss, torchtitan.

    uv run python benchmarks/head_memory.py --tt-dir $TT_DIR --tt-deps $TT_DEPS   # memory, seq 2048 + 8192
    uv run python benchmarks/head_memory.py --speed                               # tokens/s, plain vs chunked

**Memory.** The model is Llama 3 8B's width and 128,256-token vocabulary cut
to 2 blocks, where the output projection and the cross-entropy make the
step's largest activation (as in the full model). Its float32 weights, their
gradients and AdamW's two moments alone are 24 GB, more than this machine
has, so each side runs one real training step under ``FakeTensorMode``
(tensors with shapes and dtypes but no storage) and the next step under
torch's ``MemTracker``: the peak of live tensor bytes over forward, loss,
backward, gradient clipping and the AdamW step, with bf16 autocast and batch 1.
The same tracker measures real CPU runs in benchmarks/memory.py; the fake mode
only removes the storage. The three sides:

* ``titan``: titan's own Trainer (plugin phases, ``train_step``), as
  benchmarks/plan_simulate.py runs it, on one rank;
* ``titan+chunked``: the same with ``--plugins chunked-loss``;
* ``torchtitan``: torchtitan v0.2.2's own Llama 3 ``Transformer`` and
  ``cross_entropy_loss``, in the order of its ``forward_backward_step`` and
  ``train_step`` (autocast forward and loss, ``del pred``, backward, clip,
  fused AdamW, ``zero_grad``). Its trainer needs CUDA and a data pipeline,
  which hold no tensors of the step; its model and loss are imported from a
  v0.2.2 tree (``--tt-dir``, built by ``benchmarks/setup_torchtitan.sh`` or as
  ``../shared/bench/torchtitan-cpu/README.md`` says) and not changed.

**Speed.** Real steps on a narrower model that fits this machine (dim 1024,
2 blocks, the 128,256 vocabulary, seq 2048, float32: bf16 is emulated on
CPUs without AVX-512 BF16), titan with and without chunked-loss built in one
process and stepped in turn, round after round, so that the machine's drift
hits both alike; prints the median tokens/s of each and the ratio.

A benchmark that prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MIB = 2**20

TT_8B = {  # torchtitan v0.2.2's llama3_configs["8B"]
    "dim": 4096,
    "n_heads": 32,
    "n_kv_heads": 8,
    "ffn_dim_multiplier": 1.3,
    "multiple_of": 1024,
    "rope_theta": 500000,
}


def titan_peak(seq: int, plugins: tuple[str, ...]) -> dict[str, Any]:
    """titan's Trainer on one rank, faked: the tracked step's peak by kind (bytes)."""
    import plan_simulate as sim  # a sibling script (benchmarks/ is on sys.path)

    case = sim.SimCase("head", shape="8B-2L", seq=seq, ranks=1, plugins=plugins)
    with tempfile.TemporaryDirectory() as tmp:
        return sim.simulate(case, Path(tmp))


def torchtitan_peak(seq: int, tt_dir: str, tt_deps: str) -> dict[str, Any]:
    """torchtitan v0.2.2's model and loss, one tracked step in its train step's order, faked."""
    sys.path[:0] = [tt_dir, tt_deps]
    import torch
    from plan_simulate import materialise_unsharded, peak_by_kind
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from torchtitan.components.loss import cross_entropy_loss
    from torchtitan.models.llama3.model.args import TransformerModelArgs
    from torchtitan.models.llama3.model.model import Transformer

    args = TransformerModelArgs(**TT_8B, n_layers=2, vocab_size=128256, max_seq_len=seq)
    with FakeTensorMode():
        with torch.device("meta"):
            model = Transformer(args)
        materialise_unsharded(model, "cpu")  # fake: no values for init_weights to draw
        model.train()
        # torchtitan's defaults: AdamW, lr 8e-4, weight decay 0.1, fused implementation
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True
        )

        def step() -> None:
            inputs = torch.randint(0, args.vocab_size, (1, seq))
            labels = torch.randint(0, args.vocab_size, (1, seq))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred = model(inputs)
                loss = cross_entropy_loss(pred, labels) / labels.numel()
            del pred
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            optimizer.step()
            optimizer.zero_grad()

        step()  # AdamW's moments exist from here on
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            step()
        by_kind = peak_by_kind(tracker)
    return {"peak": by_kind.get("Total", 0), "by_kind": by_kind}


def worker(side: str, seq: int, tt_dir: str, tt_deps: str) -> dict[str, Any]:
    if side == "torchtitan":
        return torchtitan_peak(seq, tt_dir, tt_deps)
    return titan_peak(seq, ("chunked-loss",) if side == "titan+chunked" else ())


def in_fresh_process(side: str, seq: int, tt_dir: str, tt_deps: str) -> dict[str, Any]:
    """One measurement per process: fake process groups and sys.path do not carry over."""
    cmd = [sys.executable, __file__, "--worker", side, str(seq), tt_dir, tt_deps]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"[{side} seq {seq}] failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].split("RESULT ", 1)[1])


def memory(seqs: list[int], tt_dir: str, tt_deps: str) -> None:
    sides = ["titan", "titan+chunked"] + (["torchtitan"] if tt_dir else [])
    print(f"{'seq':>5}  " + "  ".join(f"{s + ' MiB':>18}" for s in sides) + "  chunked vs others")
    for seq in seqs:
        peaks = {s: in_fresh_process(s, seq, tt_dir, tt_deps)["peak"] for s in sides}
        rel = [
            f"{100 * (peaks['titan+chunked'] / peaks[s] - 1):+.1f}% vs {s}"
            for s in sides
            if s != "titan+chunked"
        ]
        cells = "  ".join(f"{peaks[s] / MIB:>18,.0f}" for s in sides)
        print(f"{seq:>5}  {cells}  {', '.join(rel)}", flush=True)


SPEED_FLAVOR = {
    "dim": 1024,
    "n_layers": 2,
    "n_heads": 8,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "multiple_of": 256,
    "rope_theta": 500000.0,
    "max_seq_len": 2048,
}


def speed(rounds: int, steps: int, seq: int) -> None:
    import torch

    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        flavor = Path(tmp) / "flavor.json"
        flavor.write_text(json.dumps({"args": SPEED_FLAVOR}))
        trainers = {}
        for name, plugins in (("plain", []), ("chunked", ["chunked-loss"])):
            job = prepare_job(
                None,
                plugins,
                [
                    ("model.flavor", str(flavor)),
                    ("training.seq_len", str(seq)),
                    ("training.local_batch_size", "1"),
                    ("training.mixed_precision_param", "float32"),
                    ("job.dump_folder", f"{tmp}/{name}"),
                ],
            )
            trainers[name] = Trainer(job)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, SPEED_FLAVOR["vocab_size"], (1, seq + 1), generator=g)
        batch = [(tokens[:, :-1], tokens[:, 1:])]
        for t in trainers.values():
            t.train_step(batch)  # warm-up: optimizer state, allocator
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        for r in range(rounds):
            order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
            for name in order:
                start = time.perf_counter()
                for _ in range(steps):
                    loss, _ = trainers[name].train_step(batch)
                    loss.item()
                rates[name].append(steps * seq / (time.perf_counter() - start))
            print(
                f"round {r + 1}: plain {rates['plain'][-1]:.0f} tok/s, "
                f"chunked {rates['chunked'][-1]:.0f} tok/s",
                flush=True,
            )
        plain, chunked = (statistics.median(rates[n]) for n in ("plain", "chunked"))
        print(
            f"speed: plain {plain:.0f} tok/s, chunked {chunked:.0f} tok/s, ratio {chunked / plain:.3f}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        side, seq, tt_dir, tt_deps = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        print("RESULT " + json.dumps(worker(side, seq, tt_dir, tt_deps)), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqs", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--tt-dir", default=os.environ.get("TT_DIR", ""))
    ap.add_argument("--tt-deps", default=os.environ.get("TT_DEPS", ""))
    ap.add_argument("--speed", action="store_true", help="tokens/s instead of memory")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq", type=int, default=2048, help="sequence length of --speed")
    a = ap.parse_args()
    if a.speed:
        speed(a.rounds, a.steps, a.seq)
        return
    if not a.tt_dir:
        print("note: no --tt-dir (or TT_DIR): torchtitan's column is left out", file=sys.stderr)
    memory(a.seqs, a.tt_dir, a.tt_deps)


if __name__ == "__main__":
    main()
