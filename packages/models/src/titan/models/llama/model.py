"""The Llama transformer, single-device and plain (after Meta's reference and torchtitan).

RMSNorm (computed in float32, keeping only its input for backward), rotary
position embeddings (complex form, optional Llama 3.1 scaling),
grouped-query attention through ``scaled_dot_product_attention(enable_gqa=True)``,
SwiGLU feed-forward. Parallelism, checkpointing, compilation and float8 are
applied from outside by plugins; nothing here knows about them. Blocks live
in ``model.layers`` (a ModuleDict keyed "0", "1", ...) so plugins can wrap or
replace them one by one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from titan.models.llama.args import LlamaArgs, RopeScaling


def _scale_freqs(freqs: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1 RoPE scaling: long wavelengths slowed by ``factor``, short ones kept."""
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    scaled = torch.where(wavelen > low_freq_wavelen, freqs / s.factor, freqs)
    mid = (1 - smooth) * freqs / s.factor + smooth * freqs
    is_mid = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_mid, mid, scaled)


def precompute_freqs_cis(
    head_dim: int, end: int, theta: float, scaling: RopeScaling | None = None
) -> torch.Tensor:
    """Complex rotations ``e^{i * pos * freq}``, shape (end, head_dim // 2).

    Always computed on the CPU in float32 (as Hugging Face does), whatever the
    default device: the values then do not depend on the accelerator, and on
    the meta device ``float ** tensor`` would import torch's Python
    decompositions (about 4 s) just to describe a model.
    """
    cpu = torch.device("cpu")
    exponents = torch.arange(0, head_dim, 2, device=cpu)[: head_dim // 2].float() / head_dim
    freqs = 1.0 / (theta**exponents)
    if scaling is not None:
        freqs = _scale_freqs(freqs, scaling)
    t = torch.arange(end, device=cpu, dtype=torch.float32)
    angles = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate adjacent pairs of q and k features by position (x: bs, seq, heads, head_dim)."""
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    freqs = freqs_cis[: xq.shape[1]].view(1, xq.shape[1], 1, xq_.shape[-1])
    xq_out = torch.view_as_real(xq_ * freqs).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm in float32 that keeps only the input (in its own dtype) for backward.

    ``F.rms_norm(x.float(), ...)`` would keep float32 copies of a bf16 input
    for backward: two bytes more per element on the fused path, three full
    float32 copies (12 bytes per element) on the composite one (CPU, or input
    and weight of different dtypes). Here the forward is the same call (same
    values, bit for bit) and backward upcasts the saved input again. The
    gradients are the analytic RMSNorm gradients in float32: equal to what
    autograd would compute up to floating-point reordering.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).type_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + ctx.eps)
        xhat = xf * rstd
        g = grad.float()
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g * xhat).flatten(0, -2).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gxhat = g * weight.float()
            grad_x = rstd * (gxhat - xhat * (gxhat * xhat).mean(-1, keepdim=True))
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_w, None


def _distributed(t: torch.Tensor) -> bool:
    """A DTensor (it has placements on a device mesh), told apart without importing it."""
    return hasattr(t, "placements")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _distributed(x) and not _distributed(self.weight):
            return _RMSNormFunction.apply(x, self.weight, self.eps)
        # Tensor-parallel DTensors (sequence parallel): autograd's own path, whose weight
        # gradient DTensor knows how to reduce.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.kv_heads
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        bs, seqlen, _ = x.shape
        # -1 instead of the head count: under tensor parallelism each rank holds a share of heads.
        xq = self.wq(x).view(bs, seqlen, -1, self.head_dim)
        xk = self.wk(x).view(bs, seqlen, -1, self.head_dim)
        xv = self.wv(x).view(bs, seqlen, -1, self.head_dim)
        xq, xk = apply_rotary_emb(xq, xk, freqs_cis)
        # Grouped-query attention: SDPA shares each kv head with its group of q heads
        # itself (enable_gqa), with no repeated copy of k and v.
        gqa = xq.shape[2] != xk.shape[2]
        out = F.scaled_dot_product_attention(
            xq.transpose(1, 2),
            xk.transpose(1, 2),
            xv.transpose(1, 2),
            is_causal=True,
            enable_gqa=gqa,
        )
        return self.wo(out.transpose(1, 2).reshape(bs, seqlen, -1))

    def init_weights(self, init_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(self.wo.weight, mean=0.0, std=init_std)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, init_std: float) -> None:
        nn.init.trunc_normal_(self.w1.weight, mean=0.0, std=0.02)
        for linear in (self.w2, self.w3):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=init_std)


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: LlamaArgs) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        depth = layer_id + 1 if args.depth_init else args.n_layers
        self.weight_init_std = 0.02 / (2 * depth) ** 0.5

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis)
        return h + self.feed_forward(self.ffn_norm(h))

    def init_weights(self) -> None:
        for norm in (self.attention_norm, self.ffn_norm):
            norm.reset_parameters()
        self.attention.init_weights(self.weight_init_std)
        self.feed_forward.init_weights(self.weight_init_std)


class Transformer(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        # An explicit (empty) weight skips nn.Embedding's own normal_ init: init_weights
        # does it, and normal_ on the meta device costs seconds of imports.
        self.tok_embeddings = nn.Embedding(
            args.vocab_size, args.dim, _weight=torch.empty(args.vocab_size, args.dim)
        )
        self.layers = nn.ModuleDict(
            {str(i): TransformerBlock(i, args) for i in range(args.n_layers)}
        )
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        # Not saved in checkpoints: recomputed by init_weights after materialisation.
        default_device = torch.empty(0).device  # the device of an enclosing torch.device(...)
        self.register_buffer("freqs_cis", self._freqs_cis(default_device), persistent=False)

    def _freqs_cis(self, device: torch.device) -> torch.Tensor:
        a = self.args
        end = a.max_seq_len * 2
        if device.type == "meta":  # only the shape matters until init_weights
            return torch.empty(end, a.head_dim // 2, dtype=torch.complex64, device=device)
        return precompute_freqs_cis(a.head_dim, end, a.rope_theta, a.rope_scaling).to(device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, self.freqs_cis)
        return self.output(self.norm(h))

    @torch.no_grad()
    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        """Initialise every weight (after ``to_empty``), as the reference training recipe does."""
        self.freqs_cis = self._freqs_cis(buffer_device or self.freqs_cis.device)
        nn.init.normal_(self.tok_embeddings.weight)
        for layer in self.layers.values():
            layer.init_weights()
        self.norm.reset_parameters()
        std = self.args.dim**-0.5
        nn.init.trunc_normal_(self.output.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


def build_llama(args: LlamaArgs) -> Transformer:
    return Transformer(args)
