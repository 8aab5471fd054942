"""Weights are planned on the meta device, then materialised and initialised as the reference does."""

from __future__ import annotations

import math

import torch

from titan.models.llama.args import LLAMA3_FLAVORS, LlamaArgs
from titan.models.llama.model import build_llama

ARGS = LlamaArgs(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=2048, max_seq_len=128)


def materialised(args: LlamaArgs) -> torch.nn.Module:
    with torch.device("meta"):
        model = build_llama(args)
    assert all(t.is_meta for t in (*model.parameters(), *model.buffers()))  # nothing allocated
    model.to_empty(device="cpu")
    model.init_weights(buffer_device=torch.device("cpu"))
    return model


def test_meta_build_runs_no_init_and_no_rope_math(monkeypatch) -> None:
    """Describing a model runs no init and no rope math: on meta, normal_ alone imports
    torch's Python decompositions (seconds), and a 128K-context rope table is 128 MiB.
    (How long a build takes is a benchmark's figure: benchmarks/startup.py.)"""
    import titan.models.llama.model as llama_model

    def forbidden(*args, **kwargs):
        raise AssertionError("work done while building on the meta device")

    monkeypatch.setattr(torch.nn.init, "normal_", forbidden)
    monkeypatch.setattr(llama_model, "precompute_freqs_cis", forbidden)
    with torch.device("meta"):
        model = build_llama(LLAMA3_FLAVORS["3.1-8B"])
    assert model.freqs_cis.shape == (2 * 131072, 64) and model.freqs_cis.is_meta


def test_depth_scaled_init_statistics() -> None:
    torch.manual_seed(0)
    model = materialised(ARGS)
    std = lambda t: t.float().std().item()  # noqa: E731
    assert abs(std(model.tok_embeddings.weight) - 1.0) < 0.01
    for i, block in model.layers.items():
        depth_std = 0.02 / math.sqrt(2 * (int(i) + 1))  # shrinks with depth
        for linear in (block.attention.wq, block.attention.wk, block.attention.wv):
            assert abs(std(linear.weight) / 0.02 - 1) < 0.03
        assert abs(std(block.feed_forward.w1.weight) / 0.02 - 1) < 0.03
        for linear in (block.attention.wo, block.feed_forward.w2, block.feed_forward.w3):
            assert abs(std(linear.weight) / depth_std - 1) < 0.03, (i, linear)
        assert torch.equal(block.attention_norm.weight, torch.ones(ARGS.dim))
    out = model.output.weight
    assert abs(std(out) / (ARGS.dim**-0.5) - 1) < 0.15  # truncated at 3 std: slightly narrower
    assert out.abs().max() <= 3 * ARGS.dim**-0.5 + 1e-6
    # RoPE by its definition (Su et al.; Meta's llama reference): position p, pair i of a
    # head of size d rotates by p * theta^(-2i/d). Computed here in float64, independently.
    d, theta = ARGS.head_dim, ARGS.rope_theta
    positions = torch.arange(ARGS.max_seq_len * 2, dtype=torch.float64)
    angles = positions[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    reference = torch.polar(torch.ones_like(angles), angles)
    assert model.freqs_cis.shape == reference.shape
    torch.testing.assert_close(model.freqs_cis.to(torch.complex128), reference, rtol=0, atol=1e-5)


def test_init_without_depth_scaling_uses_the_layer_count() -> None:
    torch.manual_seed(0)
    model = materialised(LlamaArgs(**{**ARGS.to_dict(), "depth_init": False}))
    flat_std = 0.02 / math.sqrt(2 * ARGS.n_layers)
    for block in model.layers.values():
        assert abs(block.attention.wo.weight.std().item() / flat_std - 1) < 0.03


def test_init_is_reproducible_and_learns() -> None:
    torch.manual_seed(3)
    a = materialised(ARGS)
    torch.manual_seed(3)
    b = materialised(ARGS)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    tokens = torch.randint(0, ARGS.vocab_size, (2, 33))
    loss = torch.nn.functional.cross_entropy(
        a(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()
    )
    assert abs(loss.item() - math.log(ARGS.vocab_size)) < 1.0  # near uniform at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters())
    # The initialised model learns: 30 AdamW steps memorise one small batch.
    optimizer = torch.optim.AdamW(a.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(30):
        optimizer.step()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            a(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()
        )
        loss.backward()
    assert loss.item() < first / 2, (first, loss.item())
