"""`titan plan`: the plan of a local debug job and of Llama 3 8B on SageMaker, JSON, jobs that
do not fit, and no torch import. Expected figures are computed by hand below, not read back."""

from __future__ import annotations

import json

import pytest
from cli_runs import imported_by  # tests/ is on sys.path (tests/conftest.py)

from titan.core.cli import main

SAGEMAKER = [
    "--backend",
    "sagemaker",
    "--sagemaker.role=arn:aws:iam::123456789012:role/R",
    "--sagemaker.region=us-east-1",
]
GIB = 2**30

# Llama 3 8B: dim 4096, 32 blocks, 32 heads over 8 kv heads (kv width 1024), FFN 14336,
# vocabulary 128256.
P_8B = (
    2 * 128256 * 4096
    + 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096)
    + 4096
)
BLOCK_LINEARS_8B = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336  # 218,103,808
FLOPS_8B_8192 = 6 * (P_8B - 128256 * 4096) + 12 * 32 * 4096 * 8192  # the MFU metric's count


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["plan", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_debug_plan_locally(tmp_path, capsys) -> None:
    code, out, err = run(["--json", f"--job.dump_folder={tmp_path}"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    mem = plan["memory"]
    # Default job: debug Llama 3, one process, 8 x 256 = 2,048 tokens, bf16 autocast, no AC.
    params = 5_770_496
    assert mem["parameters"] == params
    block = 12_288 * 2048 + 8 * 16 * 256 * 4  # bytes kept per block (see test_plan_memory)
    activations = 6 * block + 2048 * 256 * (4 + 2)
    logits = 12 * 2048 * 2048
    bf16_weights = 2 * (6 * 786_432 + 2048 * 256)
    rotary = 2 * 2048 * 8 * 8  # 2 x max_seq_len x head_dim / 2, complex64
    peak = 12 * params + activations + logits + bf16_weights + rotary
    assert mem["peak_bytes"] == peak == 285_252_608  # measured under MemTracker: 285,269,232
    assert mem["peak_phase"] == "loss backward"
    assert plan["fits"] is True
    assert plan["speed"]["tokens_per_second_per_device"] is None  # no peak FLOP/s for a CPU
    assert plan["speed"]["tokens"] == 100 * 2048


def test_debug_plan_table(tmp_path, capsys) -> None:
    code, out, err = run([f"--job.dump_folder={tmp_path}"], capsys)
    assert code == 0, err
    for needle in ("memory per device", "optimizer state", "logits/loss", "comm buffers", "peak"):
        assert needle in out
    assert "0.27 GiB" in out  # 285,252,608 bytes
    assert "fits" in out


def test_llama3_8b_on_sagemaker_p5(tmp_path, capsys) -> None:
    args = [
        *SAGEMAKER,
        "--model.flavor=8B",
        "--training.seq_len=8192",
        "--training.local_batch_size=1",
        "--plugins",
        "ac",
        "--tokens",
        "1T",
        "--price-per-hour",
        "10",
        "--spot-discount",
        "0.5",
        "--json",
    ]
    code, out, err = run(args, capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["where"] == "1 x ml.p5.48xlarge"
    assert plan["degrees"] == {"dp_replicate": 1, "dp_shard": 8, "tp": 1}
    mem = plan["memory"]
    assert mem["parameters"] == P_8B == 8_030_261_248
    shard = -(-P_8B // 8)
    t = 8192
    # Per block, selective per-op AC on a GPU: its bf16 input, the outputs of wq, wv, w1, w2,
    # the attention output (bf16) and its log-sum-exp (32 heads, float32).
    block = t * (4096 * 2 + (4096 + 1024 + 14336) * 2 + 4096 * 2 + 4096 * 2) + 32 * t * 4
    activations = 32 * block + t * 4096 * (2 + 2)  # + final norm's input, output's input
    logits = 12 * t * 128256
    # FSDP keeps the last block and [norm, output] gathered in bf16 from forward to backward
    comm = (2 * BLOCK_LINEARS_8B + 2 * 4096 * 2) + (2 * 128256 * 4096 + 2 * 4096)
    rotary = 2 * 8192 * 64 * 8  # 2 x max_seq_len x head_dim / 2, complex64
    peak = 12 * shard + activations + logits + comm + rotary
    assert mem["peak_bytes"] == peak
    assert round(peak / GIB, 2) == 40.01
    assert mem["peak_phase"] == "loss backward"
    assert plan["fits"] is True
    speed = plan["speed"]
    assert speed["flops_per_token"] == FLOPS_8B_8192 == 57_914_449_920
    # The calibration job itself (8B, seq 8192, per-op AC, FSDP, H100): torchtitan's 5,762.
    assert speed["tokens_per_second_per_device"] == pytest.approx(5762, rel=1e-9)
    seconds = 1e12 / (5762 * 8)
    assert speed["seconds"] == pytest.approx(seconds, rel=1e-6)
    assert speed["gpu_hours"] == pytest.approx(8 * seconds / 3600, rel=1e-6)  # 48,207.6
    assert speed["cost"] == pytest.approx(seconds / 3600 * 10 * 0.5, rel=1e-6)


def test_peak_does_not_fit_still_prints_a_plan(tmp_path, capsys) -> None:
    # 8B without AC, 4 x 8192 tokens per GPU: the state fits (11.2 GiB), the activations do not.
    args = [*SAGEMAKER, "--model.flavor=8B", "--training.seq_len=8192"]
    args += ["--training.local_batch_size=4"]
    code, out, err = run(args, capsys)
    assert code == 1, err
    assert "memory per device" in out
    assert "DOES NOT FIT" in out
    assert "the step's peak does not fit" in out  # titan run's own refusal, under the plan


def test_state_does_not_fit_still_prints_a_plan(capsys) -> None:
    # 70B on one p5: 16 bytes x 70.55B parameters / 8 = 131.4 GiB of state per 79.6 GiB GPU.
    code, out, err = run([*SAGEMAKER, "--model.flavor=70B", "--json"], capsys)
    assert code == 1, err
    plan = json.loads(out)
    assert plan["fits"] is False
    assert plan["refusal"].startswith("model state does not fit")
    state = plan["memory"]["weights_bytes"] + plan["memory"]["optimizer_bytes"]
    assert state + plan["memory"]["grads_bytes"] == 16 * -(-70_553_706_496 // 8)


def test_tokens_suffixes() -> None:
    from titan.core.speed_plan import parse_tokens

    assert parse_tokens("1T") == 10**12
    assert parse_tokens("500B") == 5 * 10**11
    assert parse_tokens("2.5M") == 2_500_000
    assert parse_tokens("20k") == 20_000
    assert parse_tokens("1000") == 1000


def test_plan_imports_no_torch(tmp_path) -> None:
    out, modules = imported_by("plan", "--json", f"--job.dump_folder={tmp_path}")
    assert not modules & {"torch", "torchao", "datasets", "transformers"}, sorted(
        modules & {"torch", "torchao", "datasets", "transformers"}
    )
    assert json.loads(out)["memory"]["peak_bytes"] > 0  # it planned
