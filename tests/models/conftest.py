"""Shared fixtures for the model tests: the registry as titan fills it, small random HF Llamas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from titan.core.plugins import load_plugins
from titan.core.registry import ModelRegistry


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    """Model families exactly as `titan` sees them (every installed plugin registers)."""
    reg = ModelRegistry()
    load_plugins().pm.hook.titan_register_models(registry=reg)
    return reg


def _hf_config(**overrides: Any) -> Any:
    """A tiny Llama config (GQA 4 heads / 2 kv heads, Llama 3 theta) with ``overrides``."""
    from transformers import LlamaConfig

    base: dict[str, Any] = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=128,
    )
    base.update(overrides)
    return LlamaConfig(**base)


@pytest.fixture
def hf_config() -> Callable[..., Any]:
    """``hf_config(**overrides)`` -> a tiny LlamaConfig (GQA 4/2 heads, Llama 3 theta)."""
    return _hf_config


@pytest.fixture
def llama31_scaling() -> dict[str, Any]:
    """Llama 3.1 rope scaling, with a context short enough that 64 tokens reach every band."""
    return {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }


@pytest.fixture
def make_hf_model(tmp_path: Path) -> Callable[..., tuple[Any, Path]]:
    """Build a random HF LlamaForCausalLM, save it, return (model, folder).

    Every weight, norms included, is drawn from N(0, 0.3^2) so that logits are
    O(1) and a mapping mistake anywhere (a swapped projection, a missing
    permutation, norm weights left at one) shows up far above 1e-5.
    """
    from transformers import LlamaForCausalLM

    def make(name: str = "hf", dtype: torch.dtype = torch.float32, **overrides: Any):
        torch.manual_seed(0)
        model = LlamaForCausalLM(_hf_config(**overrides)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        model = model.to(dtype)
        folder = tmp_path / name
        model.save_pretrained(folder)
        return model, folder

    return make
