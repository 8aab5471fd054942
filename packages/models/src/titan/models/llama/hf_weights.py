"""Hugging Face ``LlamaForCausalLM`` weights <-> titan's Llama state dict.

Two things differ. The names (``model.layers.0.self_attn.q_proj.weight`` vs
``layers.0.attention.wq.weight``), and the order of the rows of the query and
key projections. Meta's RoPE rotates *adjacent* feature pairs (0,1), (2,3)...
as complex numbers; HF's ``rotate_half`` pairs feature i with i + head_dim/2.
So HF's checkpoints store wq/wk with each head's rows permuted: the even rows
of a head first, then its odd rows (see transformers'
``convert_llama_weights_to_hf.py``). :func:`to_hf_rotary` does that
permutation and :func:`from_hf_rotary` undoes it; both are exact (pure row
reorders), so conversions round-trip bit for bit.
"""

from __future__ import annotations

import re

import torch

from titan.models.errors import ConversionError
from titan.models.llama.args import LlamaArgs

_GLOBAL = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_PER_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_TITAN_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_TITAN_TO_HF_LAYER = {v: k for k, v in _PER_LAYER.items()}
_TITAN_TO_HF_GLOBAL = {v: k for k, v in _GLOBAL.items()}


def to_hf_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta (interleaved pairs) -> HF (rotate_half) row order of a q or k projection."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def from_hf_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF (rotate_half) -> Meta (interleaved pairs) row order; the inverse of to_hf_rotary."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def hf_name_to_titan(name: str) -> str:
    """``model.layers.3.mlp.gate_proj.weight`` -> ``layers.3.feed_forward.w1.weight``."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _HF_LAYER.match(name)
    if m and m.group(2) in _PER_LAYER:
        return f"layers.{m.group(1)}.{_PER_LAYER[m.group(2)]}"
    raise ConversionError(
        f"unexpected tensor '{name}' in the Hugging Face checkpoint; it is not a plain "
        "LlamaForCausalLM (adapters, quantized or fused weights cannot be converted)"
    )


def titan_name_to_hf(name: str) -> str:
    """Inverse of :func:`hf_name_to_titan`."""
    if name in _TITAN_TO_HF_GLOBAL:
        return _TITAN_TO_HF_GLOBAL[name]
    m = _TITAN_LAYER.match(name)
    if m and m.group(2) in _TITAN_TO_HF_LAYER:
        return f"model.layers.{m.group(1)}.{_TITAN_TO_HF_LAYER[m.group(2)]}"
    raise ConversionError(
        f"tensor '{name}' of the titan checkpoint has no Hugging Face Llama name; only "
        "plain Llama model weights can be exported"
    )


def _rotary_heads(titan_name: str, args: LlamaArgs) -> int | None:
    if titan_name.endswith("attention.wq.weight"):
        return args.n_heads
    if titan_name.endswith("attention.wk.weight"):
        return args.kv_heads
    return None


def hf_to_titan(state: dict[str, torch.Tensor], args: LlamaArgs) -> dict[str, torch.Tensor]:
    """Rename and un-permute an HF Llama state dict into titan's.

    A checkpoint with tied embeddings (no ``lm_head.weight``) gets the
    embedding as its output projection: titan's Llama keeps them separate.
    """
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = hf_name_to_titan(name)
        heads = _rotary_heads(new, args)
        out[new] = from_hf_rotary(tensor, heads).contiguous() if heads else tensor
    return out


def titan_to_hf(state: dict[str, torch.Tensor], args: LlamaArgs) -> dict[str, torch.Tensor]:
    """Rename and permute titan's Llama state dict into HF's (contiguous, safetensors-ready)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        heads = _rotary_heads(name, args)
        out[titan_name_to_hf(name)] = (
            to_hf_rotary(tensor, heads) if heads else tensor
        ).contiguous()
    return out


def expected_shapes(args: LlamaArgs) -> dict[str, tuple[int, ...]]:
    """titan parameter name -> shape for ``args``, from a meta-device build (no memory)."""
    from titan.models.llama.model import build_llama

    with torch.device("meta"):
        model = build_llama(args)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_shapes(state: dict[str, torch.Tensor], args: LlamaArgs, what: str) -> None:
    """Fail with a clear message when ``state`` does not fit a model built from ``args``."""
    want = expected_shapes(args)
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {want[k]}"
        for k in sorted(set(want) & set(state))
        if tuple(state[k].shape) != want[k]
    ]
    if missing or extra or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {extra[:3]}" if extra else "",
                f"wrong shapes {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise ConversionError(
            f"{what} does not match the model args ({details}); check that the config "
            "belongs to these weights"
        )
