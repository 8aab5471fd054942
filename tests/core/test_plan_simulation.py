"""`titan plan`'s memory model against torch's simulation of an 8-rank FSDP run on fake tensors.

benchmarks/plan_simulate.py runs titan's trainer (model through the plugin phases, FSDP2 over
8 ranks, bf16 mixed precision, AdamW) as rank 0 of a fake process group under
``FakeTensorMode``, and reads the step's peak from torch's ``FSDPMemTracker``; the benchmark
does it for Llama 3 8B at seq 8192. Here the same simulation runs on the Llama 3 debug shape
(6 blocks, dim 256) with per-op activation checkpointing, which exercises recomputation, the
sharded state and the weights in flight, in well under a minute on 2 cores, and must agree
with ``titan.core.memory_plan.plan_memory`` within 10%.
"""

from __future__ import annotations

from benchmark_modules import load_benchmark  # tests/ is on sys.path (tests/conftest.py)

bench = load_benchmark("plan_simulate")


def test_plan_within_10_percent_of_fake_8_rank_simulation() -> None:
    case = bench.SimCase("debug-2048-op-8ranks", "debug", seq=2048, ac="op", ranks=8)
    row = bench.compare(case)
    assert row["device"] == "cpu", row  # no GPU here: fake CPU tensors
    by_kind = row["by_kind"]
    # The state really is sharded 8 ways: 5,770,496 float32 parameters / 8 on this rank, and
    # AdamW's two moments of that shard (plus the step counters) exist from the first step.
    assert by_kind["Sharded Param"] == 5_770_496 * 4 // 8, by_kind
    assert by_kind["OptState"] >= 2 * by_kind["Sharded Param"], by_kind
    assert abs(row["error_pct"]) <= 10, row
