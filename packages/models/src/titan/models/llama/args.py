"""Llama hyper-parameters and the official flavors (torch-free, so listing is cheap).

Values follow Meta's reference ``params.json`` files. Parameter counts are
never typed in: ``titan models list`` builds each flavor on the meta device
and counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency-dependent RoPE scaling (long-context extension)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class LlamaArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    """None means n_heads (plain multi-head attention, Llama 2 7B/13B)."""
    vocab_size: int = 128256
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    max_seq_len: int = 8192
    depth_init: bool = True
    """Scale output-projection init by layer depth (torchtitan's default)."""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU hidden size: 2/3 of 4*dim, times the multiplier, rounded up to multiple_of."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def with_vocab(self, vocab_size: int) -> LlamaArgs:
        return replace(self, vocab_size=vocab_size)


LLAMA3_FLAVORS: dict[str, LlamaArgs] = {
    "debug": LlamaArgs(
        dim=256,
        n_layers=6,
        n_heads=16,
        n_kv_heads=8,
        vocab_size=2048,
        multiple_of=256,
        rope_theta=500000.0,
        max_seq_len=2048,
    ),
    "8B": LlamaArgs(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        ffn_dim_multiplier=1.3,
        multiple_of=1024,
        rope_theta=500000.0,
    ),
    "70B": LlamaArgs(
        dim=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        ffn_dim_multiplier=1.3,
        multiple_of=4096,
        rope_theta=500000.0,
    ),
    "405B": LlamaArgs(
        dim=16384,
        n_layers=126,
        n_heads=128,
        n_kv_heads=8,
        ffn_dim_multiplier=1.2,
        multiple_of=4096,
        rope_theta=500000.0,
    ),
}

LLAMA2_FLAVORS: dict[str, LlamaArgs] = {
    "debug": LlamaArgs(
        dim=256,
        n_layers=6,
        n_heads=16,
        vocab_size=2048,
        multiple_of=256,
        rope_theta=10000.0,
        max_seq_len=2048,
    ),
    "7B": LlamaArgs(
        dim=4096,
        n_layers=32,
        n_heads=32,
        vocab_size=32000,
        multiple_of=256,
        rope_theta=10000.0,
        max_seq_len=4096,
    ),
    "13B": LlamaArgs(
        dim=5120,
        n_layers=40,
        n_heads=40,
        vocab_size=32000,
        multiple_of=256,
        rope_theta=10000.0,
        max_seq_len=4096,
    ),
    "70B": LlamaArgs(
        dim=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        vocab_size=32000,
        ffn_dim_multiplier=1.3,
        multiple_of=4096,
        rope_theta=10000.0,
        max_seq_len=4096,
    ),
}
