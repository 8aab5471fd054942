"""Hugging Face ``config.json`` <-> :class:`LlamaArgs` (torch-free).

HF describes the FFN by its size (``intermediate_size``); Meta's reference
and titan describe it by ``ffn_dim_multiplier`` and ``multiple_of``. Reading
a config therefore searches for the pair that reproduces the size, preferring
the pairs of registered flavors, so that an official checkpoint comes out
equal to its flavor (``llama3/8B``) rather than to an anonymous lookalike.

Both config styles are read: transformers 5 (``rope_parameters`` holding
``rope_theta`` and ``rope_type``) and older ones (top-level ``rope_theta`` and
``rope_scaling``). Writing keeps the style of the config a checkpoint came
from, and uses the older style, which every transformers version reads, when
there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from titan.models.errors import ConversionError
from titan.models.llama.args import LlamaArgs, RopeScaling

# Token ids of the official tokenizers, written when no source config supplies them.
_FAMILY_TOKEN_IDS = {"llama3": (128000, 128001), "llama2": (1, 2)}
# Config keys titan owns when writing; any other key of a source config is carried over.
_ARCH_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rms_norm_eps",
    "max_position_embeddings",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
)


def _rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """Rope theta and Llama 3.1 scaling from either config style."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ConversionError(
            f"rope type '{rope_type}' is not supported (titan implements plain RoPE and "
            "Llama 3.1's 'llama3' scaling); convert a checkpoint that uses one of those"
        )
    scaling = RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )
    return theta, scaling


def ffn_sizing(
    dim: int, hidden: int, candidates: Iterable[LlamaArgs] = ()
) -> tuple[int, float | None]:
    """``(multiple_of, ffn_dim_multiplier)`` that make a ``dim`` model's FFN ``hidden`` wide.

    Tries the sizing of each candidate (registered flavors) first; otherwise
    uses ``multiple_of = hidden``, which reproduces any size exactly.
    """
    probe = LlamaArgs(dim=dim, n_heads=1)
    for c in candidates:
        pair = (c.multiple_of, c.ffn_dim_multiplier)
        if replace(probe, multiple_of=pair[0], ffn_dim_multiplier=pair[1]).ffn_hidden_dim == hidden:
            return pair
    base = int(2 * (4 * dim) / 3)
    pair = (hidden, None if base <= hidden else hidden / base)
    if replace(probe, multiple_of=pair[0], ffn_dim_multiplier=pair[1]).ffn_hidden_dim != hidden:
        raise ConversionError(
            f"cannot express an FFN of {hidden} for dim {dim} with multiple_of and "
            "ffn_dim_multiplier; this is not a Llama-shaped checkpoint"
        )
    return pair


def _check_supported(cfg: dict[str, Any]) -> None:
    model_type = cfg.get("model_type", "llama")
    if model_type != "llama":
        raise ConversionError(
            f"config.json has model_type '{model_type}'; only Llama checkpoints "
            "(model_type 'llama', LlamaForCausalLM) can be converted"
        )
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConversionError(
            f"hidden_act '{cfg['hidden_act']}' is not supported; Llama uses silu (SwiGLU)"
        )
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ConversionError(f"{key} = true is not supported; Llama has no biases")
    heads, dim = cfg["num_attention_heads"], cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or dim // heads
    if dim % heads or head_dim != dim // heads:
        raise ConversionError(
            f"head_dim {head_dim} is not hidden_size/num_attention_heads ({dim}/{heads}); "
            "titan's Llama needs head_dim * heads == hidden_size"
        )


def args_from_hf_config(cfg: dict[str, Any], candidates: Iterable[LlamaArgs] = ()) -> LlamaArgs:
    """The :class:`LlamaArgs` of a Hugging Face Llama ``config.json`` (already parsed)."""
    try:
        _check_supported(cfg)
        dim = int(cfg["hidden_size"])
        theta, scaling = _rope(cfg)
        multiple_of, multiplier = ffn_sizing(dim, int(cfg["intermediate_size"]), candidates)
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        return LlamaArgs(
            dim=dim,
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=None if kv == heads else kv,
            vocab_size=int(cfg["vocab_size"]),
            multiple_of=multiple_of,
            ffn_dim_multiplier=multiplier,
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_seq_len=int(cfg.get("max_position_embeddings", 2048)),
        )
    except KeyError as exc:
        raise ConversionError(
            f"config.json lacks {exc}; it is not a complete Llama config"
        ) from None


def guess_family(args: LlamaArgs) -> str:
    """llama2 or llama3 for args no registered flavor matches (only the name differs)."""
    return "llama2" if args.rope_theta <= 10000.0 and args.rope_scaling is None else "llama3"


def _rope_entries(args: LlamaArgs, style: str) -> dict[str, Any]:
    scaling = None
    if args.rope_scaling is not None:
        s = args.rope_scaling
        scaling = {
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    if style == "rope_parameters":
        params = dict(scaling or {"rope_type": "default"})
        params["rope_theta"] = args.rope_theta
        return {"rope_parameters": params}
    return {"rope_theta": args.rope_theta, "rope_scaling": scaling}


def hf_config_from_args(
    args: LlamaArgs, family: str, dtype: str, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``config.json`` for ``LlamaForCausalLM`` holding ``args``.

    ``base`` is the config the checkpoint was converted from, if any: its other
    keys (token ids, generation settings) and its rope style are kept, so an
    HF -> titan -> HF round trip gives back the same config.
    """
    cfg = {k: v for k, v in (base or {}).items() if k not in _ARCH_KEYS}
    style = "rope_parameters" if "rope_parameters" in cfg else "legacy"
    for key in ("rope_parameters", "rope_theta", "rope_scaling"):
        cfg.pop(key, None)
    cfg.update(
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": args.dim,
            "intermediate_size": args.ffn_hidden_dim,
            "num_hidden_layers": args.n_layers,
            "num_attention_heads": args.n_heads,
            "num_key_value_heads": args.kv_heads,
            "head_dim": args.head_dim,
            "vocab_size": args.vocab_size,
            "rms_norm_eps": args.norm_eps,
            "max_position_embeddings": args.max_seq_len,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            **_rope_entries(args, style),
        }
    )
    cfg["dtype" if "dtype" in cfg else "torch_dtype"] = dtype
    if base is None:
        bos, eos = _FAMILY_TOKEN_IDS.get(family, (None, None))
        fits = bos is not None and max(bos, eos) < args.vocab_size
        cfg.update(
            {
                "bos_token_id": bos if fits else None,
                "eos_token_id": eos if fits else None,
                "initializer_range": 0.02,
                "use_cache": True,
            }
        )
    return dict(sorted(cfg.items()))
