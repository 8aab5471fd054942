"""Conversions round-trip exactly: HF -> titan -> HF and titan -> HF -> titan, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from titan.models.convert import convert_hf_to_titan, convert_titan_to_hf
from titan.models.dcp_files import load_model, read_model_file
from titan.models.llama.args import LLAMA3_FLAVORS
from titan.models.llama.hf_files import INDEX_FILE, read_weights


def hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return read_weights(folder)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


def test_hf_titan_hf_is_exact(make_hf_model, llama31_scaling, registry, tmp_path) -> None:
    """bf16 weights with Llama 3.1 scaling: same tensors, same dtype, same config.json."""
    _, hf_dir = make_hf_model(dtype=torch.bfloat16, rope_scaling=llama31_scaling)
    convert_hf_to_titan(hf_dir, tmp_path / "titan", registry)
    done = convert_titan_to_hf(tmp_path / "titan", tmp_path / "back", registry)
    assert done.dtype == "bfloat16"
    assert_same_tensors(hf_tensors(hf_dir), hf_tensors(tmp_path / "back"))
    original = json.loads((hf_dir / "config.json").read_text())
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == original
    assert (tmp_path / "back" / "generation_config.json").is_file()  # side files travel


def test_titan_hf_titan_is_exact(registry, tmp_path) -> None:
    """A titan model (no HF origin) exports with a written config and comes back unchanged."""
    from titan.models.dcp_files import save_model, write_model_file
    from titan.models.llama.model import build_llama

    args = LLAMA3_FLAVORS["debug"]
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_llama(args)
    model.to_empty(device="cpu")
    model.init_weights(buffer_device=torch.device("cpu"))
    start = tmp_path / "start"
    save_model(start, model.state_dict())
    write_model_file(start, "llama3", "debug", args)
    # A tiny shard limit exercises the sharded layout and its index file.
    convert_titan_to_hf(start, tmp_path / "hf", registry, max_shard_bytes=1_000_000)
    assert (tmp_path / "hf" / INDEX_FILE).is_file()
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 1
    done = convert_hf_to_titan(tmp_path / "hf", tmp_path / "again", registry)
    assert (done.family, done.flavor, done.args) == ("llama3", "debug", args)
    assert_same_tensors(load_model(start), load_model(tmp_path / "again"))


def test_exported_model_loads_in_transformers(registry, tmp_path) -> None:
    """A written config.json without an HF origin is complete enough for from_pretrained."""
    from transformers import LlamaForCausalLM

    from titan.models.dcp_files import save_model, write_model_file
    from titan.models.llama.args import LlamaArgs
    from titan.models.llama.model import build_llama

    args = LlamaArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32)
    torch.manual_seed(0)
    model = build_llama(args)
    model.init_weights(buffer_device=torch.device("cpu"))
    save_model(tmp_path / "t", model.state_dict())
    write_model_file(tmp_path / "t", "llama3", None, args)
    convert_titan_to_hf(tmp_path / "t", tmp_path / "hf", registry)
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokens = torch.randint(0, 300, (1, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model.eval()(tokens), atol=1e-5, rtol=0)


def test_official_config_maps_to_its_flavor(registry, tmp_path) -> None:
    """Meta's Llama 3 8B config.json (values as published) is recognised as llama3/8B."""
    from titan.models.llama.hf_config import args_from_hf_config, hf_config_from_args

    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": None,
        "max_position_embeddings": 8192,
        "hidden_act": "silu",
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "torch_dtype": "bfloat16",
    }
    candidates = [a for fam in registry.families.values() for a in fam.flavors.values()]
    args = args_from_hf_config(cfg, candidates)
    assert args == LLAMA3_FLAVORS["8B"]
    back = hf_config_from_args(args, "llama3", "bfloat16", cfg)
    assert {k: back[k] for k in cfg} == cfg
    scaled = {**cfg, "max_position_embeddings": 131072}
    scaled["rope_scaling"] = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert args_from_hf_config(scaled, candidates) == LLAMA3_FLAVORS["3.1-8B"]


def test_tied_embeddings_are_untied(make_hf_model, registry, tmp_path) -> None:
    """An HF checkpoint with tied embeddings (no lm_head in the file) converts and exports."""
    hf, hf_dir = make_hf_model(tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(hf_dir / "model.safetensors")
    convert_hf_to_titan(hf_dir, tmp_path / "titan", registry)
    state = load_model(tmp_path / "titan")
    assert torch.equal(state["output.weight"], state["tok_embeddings.weight"])
    convert_titan_to_hf(tmp_path / "titan", tmp_path / "back", registry)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    out = hf_tensors(tmp_path / "back")
    assert torch.equal(out["lm_head.weight"], hf.lm_head.weight)


def test_dtype_option_casts(make_hf_model, registry, tmp_path) -> None:
    _, hf_dir = make_hf_model()
    done = convert_hf_to_titan(hf_dir, tmp_path / "titan", registry, dtype="bfloat16")
    assert done.dtype == "bfloat16"
    assert {t.dtype for t in load_model(tmp_path / "titan").values()} == {torch.bfloat16}
    info = read_model_file(tmp_path / "titan")
    assert info["family"] == "llama3" and info["flavor"] is None and info["hf_config"]


def test_export_needs_to_know_the_model(registry, tmp_path) -> None:
    """A bare DCP folder exports with --model/--flavor, and says so when they are missing."""
    import pytest

    from titan.models.dcp_files import save_model
    from titan.models.errors import ConversionError
    from titan.models.llama.model import build_llama

    model = build_llama(LLAMA3_FLAVORS["debug"])
    model.init_weights(buffer_device=torch.device("cpu"))
    save_model(tmp_path / "bare", model.state_dict())
    with pytest.raises(ConversionError, match="pass --model NAME --flavor FLAVOR"):
        convert_titan_to_hf(tmp_path / "bare", tmp_path / "hf", registry)
    with pytest.raises(ConversionError, match="does not match the model args"):
        convert_titan_to_hf(tmp_path / "bare", tmp_path / "hf", registry, flavor="8B")
    done = convert_titan_to_hf(
        tmp_path / "bare", tmp_path / "hf", registry, model="llama3", flavor="debug"
    )
    assert done.flavor == "debug" and done.parameters == 5_770_496


def test_unsupported_configs_are_refused(hf_config) -> None:
    import pytest

    from titan.models.errors import ConversionError
    from titan.models.llama.hf_config import args_from_hf_config

    good = hf_config().to_dict()
    assert args_from_hf_config(good).kv_heads == 2
    bad = {
        "model_type": ({"model_type": "mistral"}, "only Llama"),
        "bias": ({"attention_bias": True}, "no biases"),
        "act": ({"hidden_act": "gelu"}, "silu"),
        "rope": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "yarn"),
        "head_dim": ({"head_dim": 32}, "head_dim"),
        "missing": ({"hidden_size": None}, "hidden_size"),
    }
    for change, needle in bad.values():
        cfg = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises(ConversionError, match=needle):
            args_from_hf_config(cfg)
