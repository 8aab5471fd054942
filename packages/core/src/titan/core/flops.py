"""Model FLOPs per token: the standard estimate behind every MFU figure.

The count is torchtitan's (and PaLM's appendix B): a forward+backward pass
costs 6 FLOPs per parameter per token for the matmuls (2 forward, 4 backward),
plus 12 x layers x dim x seq_len per token for the attention scores and their
weighted sum (``QK^T`` and ``AV``, forward and backward). Embedding tables are
lookups, not matmuls, so their parameters are left out; the output projection
is a matmul and counts. Kept free of model-specific code: any model made of
``nn.Embedding`` and matmul layers is counted the same way.
"""

from __future__ import annotations

from typing import Any


def flops_per_token(non_embedding_params: int, n_layers: int, dim: int, seq_len: int) -> int:
    """Training FLOPs per token: 6 x N (matmuls) + 12 x L x D x T (attention)."""
    return 6 * non_embedding_params + 12 * n_layers * dim * seq_len


def non_embedding_parameters(model: Any) -> int:
    """Parameters outside ``nn.Embedding`` modules (global sizes, also when sharded)."""
    import torch

    embedding = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    # DTensor.numel() is the global size, so FSDP/TP shards count as the whole model.
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def model_flops_per_token(model: Any, model_args: Any, seq_len: int) -> int:
    """FLOPs per token of ``model`` (its arguments give layers and width) at ``seq_len``."""
    return flops_per_token(
        non_embedding_parameters(model), model_args.n_layers, model_args.dim, seq_len
    )
