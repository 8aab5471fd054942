"""FLOPs per token against a hand count for Llama 3 8B; peaks; tok/s per device under TP=2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from titan.core.device_peaks import cpu_peak, gpu_peak
from titan.core.flops import model_flops_per_token, non_embedding_parameters
from titan.core.plugins import load_plugins
from titan.core.registry import ModelRegistry


def _llama3(flavor: str):
    registry = ModelRegistry()
    load_plugins().pm.hook.titan_register_models(registry=registry)
    family = registry.get("llama3")
    args = family.flavor(flavor)
    with torch.device("meta"):
        return family.build(args), args


def test_llama3_8b_flops_match_a_hand_count() -> None:
    model, args = _llama3("8B")
    # Meta's released Llama 3 8B has 8,030,261,248 parameters (the Hugging Face checkpoint's
    # total); the embedding table is vocab 128256 x dim 4096. MFU counts the rest: every
    # matmul weight, the norms and the output projection (PaLM's convention, as torchtitan).
    non_embedding = 8_030_261_248 - 128_256 * 4096
    assert non_embedding_parameters(model) == non_embedding
    # Training FLOPs per token at 8K context: 6 per weight (forward + backward) plus
    # attention's 12 x layers x dim x seq (PaLM appendix B; torchtitan's get_num_flop_per_token).
    seq_len = 8192
    assert (
        model_flops_per_token(model, args, seq_len) == 6 * non_embedding + 12 * 32 * 4096 * seq_len
    )


def test_gpu_peak_lookup_rules() -> None:
    """How a device name finds its peak (the figures are the vendors' data sheets)."""
    sxm = gpu_peak("NVIDIA H100 80GB HBM3", float8=False)
    assert gpu_peak("NVIDIA H100 80GB HBM3", float8=True) == pytest.approx(2 * sxm, rel=1e-3)
    assert gpu_peak("NVIDIA H100 PCIe", float8=False) < sxm  # the more specific name wins
    assert gpu_peak("NVIDIA H200", float8=False) == sxm  # the same compute as H100 SXM
    # No float8 units: a float8 run is held to the bf16 peak.
    a100 = "NVIDIA A100-SXM4-80GB"
    assert gpu_peak(a100, float8=True) == gpu_peak(a100, float8=False)
    assert gpu_peak("NVIDIA GeForce RTX 4090", float8=False) is None  # unknown: no MFU


def test_cpu_peak_is_probed_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TITAN_HOME", str(tmp_path))
    first = cpu_peak("float32", seconds=0.1)
    assert first > 0
    cache = json.loads((tmp_path / "cache" / "cpu_peak.json").read_text())
    assert list(cache.values()) == [first]
    assert cpu_peak("float32", seconds=0.1) == first  # read back, not measured again


def test_a_cached_cpu_peak_below_the_runs_own_speed_is_measured_again(tmp_path: Path) -> None:
    """A probe taken on a busy CPU is too low; the next run notices, measures again, says so."""
    env = {**os.environ, "TITAN_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "titan.core.cli", "run", "--training.steps=2"]
    cmd += ["--metrics.log_freq=1", "--training.seq_len=64", "--training.local_batch_size=2"]
    first = subprocess.run([*cmd, f"--job.dump_folder={tmp_path / 'a'}"], env=env, text=True)
    assert first.returncode == 0
    cache = tmp_path / "home" / "cache" / "cpu_peak.json"
    probed = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: 1e-9 for k in probed}))  # as if probed while starved

    second = subprocess.run(
        [*cmd, f"--job.dump_folder={tmp_path / 'b'}"], env=env, capture_output=True, text=True
    )
    assert second.returncode == 0, second.stderr
    assert "was below this run's own speed" in second.stderr
    assert "measured again" in second.stderr
    assert all(v > 1e-6 for v in json.loads(cache.read_text()).values())  # the cache is fixed
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["mfu"] < 100 for r in records), records


@pytest.fixture(scope="module")
def tp2_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    dump = tmp_path_factory.mktemp("tp2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "titan.core.cli", "run", "--nproc", "2", "--plugins", "tp"]
    proc = subprocess.run(
        [
            *cmd,
            "--parallelism.tensor_parallel_degree=2",
            "--training.steps=3",
            "--training.seq_len=64",
            "--training.local_batch_size=2",
            "--metrics.log_freq=1",
            f"--job.dump_folder={dump}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines()]


def test_tokens_per_second_per_device_under_tensor_parallel(tp2_records: list[dict]) -> None:
    assert [r["step"] for r in tp2_records] == [1, 2, 3]
    _, args = _llama3("debug")
    model, _ = _llama3("debug")
    fpt = model_flops_per_token(model, args, 64)
    tokens_per_step = 2 * 64  # one data-parallel rank: local batch 2 x seq_len 64
    for r in tp2_records:
        # Both TP ranks work on the same tokens: each device gets half of them.
        assert r["tokens_per_second"] == pytest.approx(tokens_per_step / 2 / r["step_time"])
        assert r["tokens_per_second_total"] == pytest.approx(tokens_per_step / r["step_time"])
        assert r["tflops"] == pytest.approx(r["tokens_per_second"] * fpt / 1e12)
        assert 0 < r["mfu"] < 100  # against the probed CPU peak
        assert r["memory_rss_gib"] > 0 and 0 < r["memory_rss_pct"] < 100
