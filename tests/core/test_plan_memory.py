"""`titan plan`'s memory model against measured steps (torch's MemTracker / FSDPMemTracker).

Each case builds titan's real Trainer in a fresh process (torchrun for 2 ranks), runs a step,
then measures the next one's peak of live tensor bytes, and compares it with
``titan.core.memory_plan.plan_memory`` for the same job: within 10%. The cases are a subset
of ``benchmarks/plan_memory.py``'s 16 that still touches every axis (3 model shapes, seq 512
and 2048, AC none / per-op / full, 1 and 2 ranks FSDP, TP 2, fp8-ag) while staying within a
few minutes on 2 cores; the benchmark runs them all and docs/plan.md holds its table.

The hand-computed case checks the plan's terms against figures written out here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_modules import load_benchmark  # tests/ is on sys.path (tests/conftest.py)

bench = load_benchmark("plan_memory")
Case = bench.Case

CASES = [
    Case("debug-512", "debug", 512),
    Case("debug-512-full", "debug", 512, ac="full"),
    Case("mha-512-op", "mha", 512, ac="op"),
    Case("wide-512", "wide", 512),
    Case("debug-2048-op", "debug", 2048, ac="op"),
    Case("fsdp2-debug-512", "debug", 512, nproc=2),
    Case("tp2-debug-512", "debug", 512, nproc=2, tp=2),
    Case("fp8ag-debug-512", "debug", 512, nproc=2, plugins=("fp8", "fp8-ag")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_peak_within_10_percent_of_measured(case) -> None:
    row = bench.compare(case)
    assert abs(row["error_pct"]) <= 10, row


def test_debug_plan_by_hand(tmp_path: Path) -> None:
    """Llama 3 debug, one process, batch 1 x 512, bf16 autocast, no AC, computed by hand.

    dim 256, 6 blocks, 16 heads of 16 over 8 kv heads (kv width 128), FFN 768, vocab 2048.
    Parameters: 2 x 2048 x 256 (embeddings, output) + 6 x (2 x 256 x 256 + 2 x 256 x 128
    + 3 x 256 x 768 + 2 x 256) + 256 = 1,048,576 + 6 x 786,944 + 256 = 5,770,496.
    """
    plan = bench.plan(Case("hand", "debug", 512), tmp_path)
    params = 5_770_496
    assert plan.parameters == params
    assert plan.weights == 4 * params
    assert plan.optimizer == 8 * params
    t = 512
    # per block, bytes: input and h float32 (2 x 4 x 256), 5 bf16 casts of the normed input
    # (5 x 2 x 256), q (2 x 256), k and v (2 x 2 x 128), attention output (2 x 256), SwiGLU
    # (4 x 2 x 768): 2,048 + 2,560 + 512 + 512 + 512 + 6,144 = 12,288 bytes per token, plus the
    # log-sum-exp 16 heads x 512 x 4 bytes
    block = 12_288 * t + 16 * 512 * 4
    head = t * 256 * 4 + t * 256 * 2  # final norm's input (fp32), output's bf16 input
    assert plan.activations == 6 * block + head
    assert plan.logits == 12 * t * 2048  # fp32 softmax + gradient in + gradient out
    # autocast's bf16 copies of every linear weight: 6 x 786,432 + 2048 x 256
    assert plan.comm == 2 * (6 * 786_432 + 2048 * 256)
    assert plan.peak_phase == "loss backward"
    # the rotary table: 2 x max_seq_len 2048 x head_dim / 2 complex64 values (8 bytes)
    assert plan.buffers == 2 * 2048 * 8 * 8
    assert plan.peak == 12 * params + plan.activations + plan.logits + plan.comm + plan.buffers
