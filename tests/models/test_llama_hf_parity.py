"""titan's Llama computes what Hugging Face's LlamaForCausalLM computes, after conversion.

Small random HF models of both families, with and without grouped-query
attention and Llama 3.1 rope scaling, go through `convert_hf_to_titan`; the
titan model built from the converted checkpoint must give the same float32
logits within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from titan.models.convert import convert_hf_to_titan
from titan.models.dcp_files import load_model
from titan.models.llama.args import LlamaArgs
from titan.models.llama.hf_weights import from_hf_rotary, to_hf_rotary
from titan.models.llama.model import Transformer, build_llama

SEQ = 64

CASES = {
    "llama2-mha": dict(rope_theta=10000.0, num_key_value_heads=4, rms_norm_eps=1e-6),
    "llama2-gqa": dict(rope_theta=10000.0, num_key_value_heads=2),
    "llama3-gqa": dict(),
    "llama3-mha": dict(num_key_value_heads=4),
    "llama3.1-gqa-scaled": dict(rope_scaling="llama3.1"),
    "llama3.1-mha-scaled": dict(rope_scaling="llama3.1", num_key_value_heads=4),
}


def titan_model(folder, args: LlamaArgs) -> Transformer:
    """Build on meta, materialise, init (buffers), then load the converted weights."""
    with torch.device("meta"):
        model = build_llama(args)
    model.to_empty(device="cpu")
    model.init_weights(buffer_device=torch.device("cpu"))
    model.load_state_dict(load_model(folder))
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_hf(case: str, make_hf_model, llama31_scaling, registry, tmp_path) -> None:
    overrides = dict(CASES[case])
    if overrides.get("rope_scaling"):
        overrides["rope_scaling"] = llama31_scaling
    hf, hf_dir = make_hf_model(**overrides)
    done = convert_hf_to_titan(hf_dir, tmp_path / "titan", registry)
    args = done.args
    assert done.family == ("llama2" if case.startswith("llama2") else "llama3")
    assert args.kv_heads == hf.config.num_key_value_heads
    assert (args.rope_scaling is not None) == ("scaled" in case)
    model = titan_model(tmp_path / "titan", args)
    tokens = torch.randint(0, args.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(tokens).logits
        got = model(tokens)
    assert want.abs().max() > 1.0  # logits of a meaningful size, so 1e-5 is a real bound
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_without_the_rotary_permutation_logits_differ(make_hf_model, registry, tmp_path) -> None:
    """The q/k permutation is what makes the parity test pass (it is not vacuous)."""
    hf, hf_dir = make_hf_model()
    done = convert_hf_to_titan(hf_dir, tmp_path / "titan", registry)
    model = titan_model(tmp_path / "titan", done.args)
    with torch.no_grad():
        for block in model.layers.values():
            att = block.attention
            att.wq.weight.copy_(to_hf_rotary(att.wq.weight, done.args.n_heads))
            att.wk.weight.copy_(to_hf_rotary(att.wk.weight, done.args.kv_heads))
        tokens = torch.randint(0, done.args.vocab_size, (1, SEQ))
        assert (model(tokens) - hf(tokens).logits).abs().max() > 1e-2


def test_rope_scaling_changes_frequencies_like_hf(hf_config, llama31_scaling) -> None:
    """titan's Llama 3.1 frequencies equal transformers' 'llama3' rope, and scaling acts."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from titan.models.llama.args import RopeScaling
    from titan.models.llama.model import precompute_freqs_cis

    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    scaling = RopeScaling(**{k: llama31_scaling[k] for k in keys})
    cfg = hf_config(rope_scaling=dict(llama31_scaling), hidden_size=256, num_attention_heads=2)
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    ours = precompute_freqs_cis(128, 2, 500000.0, scaling)[1].angle()  # position 1 -> freqs
    plain = precompute_freqs_cis(128, 2, 500000.0)[1].angle()
    torch.testing.assert_close(ours, hf_inv_freq.float(), atol=1e-7, rtol=1e-6)
    kept = torch.isclose(ours, plain)
    slowed = torch.isclose(ours, plain / 8)
    assert kept.any() and slowed.any() and (~kept & ~slowed).any()  # all three bands occur


def test_rotary_permutation_is_an_exact_inverse() -> None:
    w = torch.randn(8 * 16, 24)
    assert torch.equal(from_hf_rotary(to_hf_rotary(w, 8), 8), w)
    assert not torch.equal(to_hf_rotary(w, 8), w)
    # Meta pairs rows (0,1) of a head; HF pairs row i with i + head_dim/2.
    head = to_hf_rotary(torch.arange(16.0).unsqueeze(1), 1).squeeze(1)
    assert head.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]
