"""Llama hyper-parameters and the official flavors (torch-free, so listing is cheap).

Values follow Meta's reference ``params.json`` files. Llama 2 and Llama 3
differ only in these numbers (vocabulary, rope theta, grouped-query heads,
FFN sizing), never in code. Parameter counts are never typed in:
:func:`parameter_count` computes them from the shapes (torch-free, so
``titan models list`` needs no torch), and a test checks it against a build
of every flavor on the meta device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency-dependent RoPE scaling (long-context extension).

    Wavelengths longer than ``original_max_position_embeddings / low_freq_factor``
    are stretched by ``factor``; those shorter than ``.../high_freq_factor`` are
    kept; the band between is interpolated smoothly.
    """

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

    def architecture(self) -> dict[str, Any]:
        """What fixes the weights' shapes and the forward math (not init, not max length).

        Two args with equal architectures can load each other's checkpoints and
        compute the same function.
        """
        return {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "kv_heads": self.kv_heads,
            "vocab_size": self.vocab_size,
            "ffn_hidden_dim": self.ffn_hidden_dim,
            "norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (checkpoint folders store it as titan_model.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlamaArgs:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so typos do not pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Llama args {unknown}; known: {sorted(known)}")
        data = dict(data)
        if data.get("rope_scaling") is not None:
            data["rope_scaling"] = RopeScaling(**data["rope_scaling"])
        return cls(**data)


def parameter_count(args: LlamaArgs) -> int:
    """Parameters of a Llama built with ``args``, from the weights' shapes.

    Token embeddings and the (untied) output projection are ``vocab x dim``
    each; a block holds q/o (``dim x heads*head_dim``), k/v
    (``dim x kv_heads*head_dim``), the three SwiGLU matrices
    (``dim x ffn_hidden_dim``) and two RMSNorm weights; a final RMSNorm closes.
    No biases.
    """
    q = args.n_heads * args.head_dim
    kv = args.kv_heads * args.head_dim
    block = 2 * args.dim * q + 2 * args.dim * kv + 3 * args.dim * args.ffn_hidden_dim + 2 * args.dim
    return 2 * args.vocab_size * args.dim + args.n_layers * block + args.dim


LLAMA31_ROPE_SCALING = RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)
LLAMA31_MAX_SEQ_LEN = 131072

_LLAMA3_8B = LlamaArgs(
    dim=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    ffn_dim_multiplier=1.3,
    multiple_of=1024,
    rope_theta=500000.0,
)
_LLAMA3_70B = LlamaArgs(
    dim=8192,
    n_layers=80,
    n_heads=64,
    n_kv_heads=8,
    ffn_dim_multiplier=1.3,
    multiple_of=4096,
    rope_theta=500000.0,
)
_LLAMA3_405B = LlamaArgs(
    dim=16384,
    n_layers=126,
    n_heads=128,
    n_kv_heads=8,
    ffn_dim_multiplier=1.2,
    multiple_of=4096,
    rope_theta=500000.0,
)


def _llama31(args: LlamaArgs) -> LlamaArgs:
    """The Llama 3.1 variant of a Llama 3 size: same weights' shapes, 128K context via scaling."""
    return replace(args, rope_scaling=LLAMA31_ROPE_SCALING, max_seq_len=LLAMA31_MAX_SEQ_LEN)


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
    "8B": _LLAMA3_8B,
    "70B": _LLAMA3_70B,
    "405B": _LLAMA3_405B,
    "3.1-8B": _llama31(_LLAMA3_8B),
    "3.1-70B": _llama31(_LLAMA3_70B),
    "3.1-405B": _llama31(_LLAMA3_405B),
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
