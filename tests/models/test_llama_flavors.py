"""The official flavors: hyper-parameters as published, parameter counts computed from their
shapes and compared with the released checkpoints' exact counts."""

from __future__ import annotations

import pytest
import torch

from titan.core.model_info import count_parameters, count_parameters_on_meta
from titan.models.llama.args import LLAMA2_FLAVORS, LLAMA3_FLAVORS

# Exact parameter counts of Meta's released checkpoints: the Hugging Face safetensors index
# totals (bytes in bfloat16 / 2); Llama 3.1 has the weights' shapes of Llama 3. Llama 2 70B by
# hand from its config.json (dim 8192, 80 layers, 64 heads of 128, 8 kv heads, FFN 28672, vocab
# 32000): 80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192)
# + 2 * 32000 * 8192 + 8192 = 68,976,648,192 (its index: 137,953,296,384 bytes).
RELEASED = {
    ("llama3", "8B"): 8_030_261_248,
    ("llama3", "70B"): 70_553_706_496,
    ("llama3", "405B"): 405_853_388_800,
    ("llama3", "3.1-8B"): 8_030_261_248,
    ("llama3", "3.1-70B"): 70_553_706_496,
    ("llama3", "3.1-405B"): 405_853_388_800,
    ("llama2", "7B"): 6_738_415_616,
    ("llama2", "13B"): 13_015_864_320,
    ("llama2", "70B"): 68_976_648_192,
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


@pytest.mark.parametrize(("family", "flavor"), sorted(RELEASED))
def test_parameter_count_matches_the_released_checkpoint(
    registry, family: str, flavor: str
) -> None:
    """Counted from the flavor's shapes, to the parameter: a wrong width or a missing weight
    (a norm, an untied output) shows."""
    fam = registry.get(family)
    assert count_parameters(fam, fam.flavor(flavor)) == RELEASED[(family, flavor)]


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
    assert sum(p.numel() for p in model.parameters()) == RELEASED[("llama3", "405B")]


def test_models_list_shows_the_released_counts() -> None:
    """`titan models list` shows each flavor's count (two decimals, in billions) as released.

    The rows are read by (model, flavor), so Llama 2 70B and Llama 3 70B are told apart.
    Whether listing imports torch: tests/core/test_cli_end_to_end.py.
    """
    from typer.testing import CliRunner

    from titan.core.cli import app

    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = {
        (cells[0], cells[1]): cells[2]
        for cells in (line.split() for line in result.output.splitlines())
        if len(cells) >= 3 and cells[0] in ("llama2", "llama3")
    }
    for key, n in RELEASED.items():
        assert shown.get(key) == f"{n / 1e9:.2f}B", (key, shown.get(key))
