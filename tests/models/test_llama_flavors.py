"""The official flavors: hyper-parameters as published, parameter counts computed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from titan.core.model_info import count_parameters, count_parameters_on_meta
from titan.models.llama.args import LLAMA2_FLAVORS, LLAMA3_FLAVORS

# Meta's published sizes (model cards / papers), in billions, to 3 significant digits.
PUBLISHED = {
    ("llama3", "8B"): 8.03,
    ("llama3", "70B"): 70.6,
    ("llama3", "405B"): 406,  # "405.9B" to 3 significant digits
    ("llama3", "3.1-8B"): 8.03,
    ("llama3", "3.1-70B"): 70.6,
    ("llama3", "3.1-405B"): 406,
    ("llama2", "7B"): 6.74,
    ("llama2", "13B"): 13.0,
    ("llama2", "70B"): 69.0,
}

# FFN widths of Meta's released checkpoints (HF config.json intermediate_size).
FFN = {
    ("llama3", "8B"): 14336,
    ("llama3", "70B"): 28672,
    ("llama3", "405B"): 53248,
    ("llama2", "7B"): 11008,
    ("llama2", "13B"): 13824,
    ("llama2", "70B"): 28672,
}


def three_digits(x: float) -> float:
    return float(f"{x:.3g}")


@pytest.mark.parametrize(("family", "flavor"), sorted(PUBLISHED))
def test_parameter_count_matches_published(registry, family: str, flavor: str) -> None:
    fam = registry.get(family)
    n = count_parameters(fam, fam.flavor(flavor))
    assert three_digits(n / 1e9) == PUBLISHED[(family, flavor)], n


@pytest.mark.parametrize("family", ["llama3", "llama2"])
def test_count_from_shapes_equals_the_built_model(registry, family: str) -> None:
    """`titan models list` counts from the args (no torch); the model built on meta agrees."""
    fam = registry.get(family)
    assert fam.parameter_count, "the Llama families count without torch"
    for flavor, args in fam.flavors.items():
        assert count_parameters(fam, args) == count_parameters_on_meta(fam, args), flavor


@pytest.mark.parametrize(("family", "flavor"), sorted(FFN))
def test_ffn_width_matches_released_checkpoints(registry, family: str, flavor: str) -> None:
    assert registry.get(family).flavor(flavor).ffn_hidden_dim == FFN[(family, flavor)]


def test_families_differ_only_in_data() -> None:
    """One builder; Llama 2 and 3 differ in vocabulary, theta, context and GQA values."""
    for args in LLAMA3_FLAVORS.values():
        assert args.rope_theta == 500000.0 and args.norm_eps == 1e-5
        assert args.kv_heads == 8  # every Llama 3 size uses grouped-query attention
    for name in ("8B", "70B", "405B"):
        assert LLAMA3_FLAVORS[name].vocab_size == 128256
        assert LLAMA3_FLAVORS[name].max_seq_len == 8192
        assert LLAMA3_FLAVORS[name].rope_scaling is None
        scaled = LLAMA3_FLAVORS[f"3.1-{name}"]
        assert scaled.max_seq_len == 131072
        assert scaled.rope_scaling is not None and scaled.rope_scaling.factor == 8.0
        assert scaled.architecture()["dim"] == LLAMA3_FLAVORS[name].dim
    for name in ("7B", "13B", "70B"):
        args = LLAMA2_FLAVORS[name]
        assert (args.rope_theta, args.vocab_size, args.max_seq_len) == (10000.0, 32000, 4096)
    assert LLAMA2_FLAVORS["7B"].kv_heads == 32 and LLAMA2_FLAVORS["13B"].kv_heads == 40
    assert LLAMA2_FLAVORS["70B"].kv_heads == 8  # Llama 2 70B has grouped-query attention


def test_405b_is_described_without_memory() -> None:
    """The biggest flavor builds on meta: shapes and byte counts, no storage."""
    from titan.models.llama.model import build_llama

    with torch.device("meta"):
        model = build_llama(LLAMA3_FLAVORS["405B"])
    assert all(p.is_meta for p in model.parameters())
    assert model.layers["125"].feed_forward.w1.weight.shape == (53248, 16384)
    bf16_bytes = sum(p.numel() for p in model.parameters()) * 2
    assert 811e9 < bf16_bytes < 812e9


def test_models_list_shows_computed_counts(registry) -> None:
    from typer.testing import CliRunner

    from titan.core.cli import app

    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # Exact parameter counts of Meta's released checkpoints (the Hugging Face safetensors
    # index totals), shown to two decimals in billions.
    exact = {
        "8B": 8_030_261_248,
        "70B": 70_553_706_496,
        "405B": 405_853_388_800,
        "7B": 6_738_415_616,
        "13B": 13_015_864_320,
    }
    for flavor, n in exact.items():
        row = next(line for line in result.output.splitlines() if f" {flavor} " in line)
        assert f"{n / 1e9:.2f}B" in row, row
    assert "3.1-8B" in result.output


def test_models_list_does_not_import_torch() -> None:
    """Listing is torch-free for titan's families (startup.py prints how long it takes)."""
    code = (
        "import sys\n"
        "from titan.core import cli\n"
        "try:\n    cli.main(['models', 'list'])\nexcept SystemExit as e:\n    assert not e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "405B" in result.stdout and "TORCH False" in result.stdout
