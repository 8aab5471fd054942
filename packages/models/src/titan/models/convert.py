"""``titan convert``: Hugging Face Llama checkpoints <-> titan (DCP) checkpoints.

hf-to-titan: config.json -> LlamaArgs (matched to a registered flavor when
one is equal), safetensors -> renamed, un-permuted weights -> a DCP folder
with the weights under ``"model"``, plus ``titan_model.json`` (family,
flavor, args and the source config.json) and the tokenizer files.

titan-to-hf: the model weights of a converted folder or of any training
checkpoint (``<dump_folder>/checkpoint/step-N``) -> config.json +
safetensors that ``LlamaForCausalLM.from_pretrained`` loads. The args come
from ``titan_model.json``, else from the run's ``job_config.toml``, else
from ``--model``/``--flavor``.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.core.registry import ModelRegistry
from titan.models.dcp_files import (
    load_model,
    read_model_file,
    require_checkpoint,
    save_model,
    write_model_file,
)
from titan.models.errors import ConversionError
from titan.models.llama import hf_files
from titan.models.llama.args import LlamaArgs
from titan.models.llama.hf_config import args_from_hf_config, guess_family, hf_config_from_args

if TYPE_CHECKING:  # torch loads only once the cheap checks passed: user errors come fast
    import torch

LLAMA_BUILDER = "titan.models.llama.model:build_llama"
JOB_CONFIG = "job_config.toml"

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(name: str) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16``; ``"auto"`` -> None (keep the stored dtype)."""
    if name not in DTYPE_NAMES:
        raise ConversionError(f"unknown dtype '{name}'; use one of {', '.join(DTYPE_NAMES)}")
    import torch

    return None if name == "auto" else getattr(torch, name)


@dataclass
class Converted:
    """What a conversion produced, for the command's summary line."""

    family: str
    flavor: str | None
    args: LlamaArgs
    parameters: int
    dtype: str
    out: Path


def llama_flavors(registry: ModelRegistry) -> list[tuple[str, str, LlamaArgs]]:
    """(family, flavor, args) of every registered Llama-built flavor, third parties' included."""
    return [
        (fam.name, name, args)
        for fam in registry.families.values()
        if fam.builder == LLAMA_BUILDER
        for name, args in fam.flavors.items()
        if isinstance(args, LlamaArgs)
    ]


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(
            f"output folder '{out}' exists and is not empty; pass a new or empty folder"
        )


def _copy_side_files(src: Path, dst: Path) -> None:
    """Tokenizer and generation files travel with the weights, unchanged."""
    for name in hf_files.TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def _dtype_name(state: dict[str, torch.Tensor]) -> str:
    return str(next(iter(state.values())).dtype).removeprefix("torch.")


def convert_hf_to_titan(
    hf_dir: Path, out: Path, registry: ModelRegistry, dtype: str = "auto"
) -> Converted:
    """Read an HF Llama folder and write it as a titan checkpoint folder ``out``."""
    cfg = hf_files.read_config(hf_dir)
    _check_out(out)
    known = llama_flavors(registry)
    args = args_from_hf_config(cfg, [a for _, _, a in known])
    family, flavor = next(((f, n) for f, n, a in known if a == args), (guess_family(args), None))
    from titan.models.llama.hf_weights import check_shapes, hf_to_titan

    state = hf_to_titan(hf_files.read_weights(hf_dir, torch_dtype(dtype)), args)
    check_shapes(state, args, f"the weights in '{hf_dir}'")
    # Tied embeddings share one tensor between two names; give each its own storage.
    if state["output.weight"].data_ptr() == state["tok_embeddings.weight"].data_ptr():
        state["output.weight"] = state["output.weight"].clone()
    save_model(out, state)
    write_model_file(out, family, flavor, args, source=str(hf_dir), hf_config=cfg)
    _copy_side_files(hf_dir, out)
    return Converted(
        family, flavor, args, sum(t.numel() for t in state.values()), _dtype_name(state), out
    )


def _args_from_job_config(ckpt: Path, registry: ModelRegistry) -> tuple[str, str, Any] | None:
    """(family, flavor, args) of the run that wrote ``ckpt``, from its job_config.toml."""
    for folder in list(ckpt.resolve().parents)[:3]:
        path = folder / JOB_CONFIG
        if path.is_file():
            model = tomllib.loads(path.read_text()).get("model", {})
            name, flavor = model.get("name", "llama3"), model.get("flavor", "debug")
            args = registry.get(name).flavor(flavor)
            if model.get("vocab_size"):
                args = args.with_vocab(int(model["vocab_size"]))
            return name, flavor, args
    return None


def _titan_args(
    ckpt: Path, registry: ModelRegistry, model: str | None, flavor: str | None
) -> tuple[str, str | None, Any, dict[str, Any] | None]:
    """(family, flavor, args, source HF config) of the model in ``ckpt``."""
    info = read_model_file(ckpt)
    if model or flavor:
        if not flavor:
            raise ConversionError("--model needs --flavor too (see `titan models list`)")
        name = model or (info or {}).get("family") or "llama3"
        return name, flavor, registry.get(name).flavor(flavor), None
    if info is not None:
        args = LlamaArgs.from_dict(info["args"])
        return info["family"], info.get("flavor"), args, info.get("hf_config")
    found = _args_from_job_config(ckpt, registry)
    if found is None:
        raise ConversionError(
            f"cannot tell which model '{ckpt}' holds (no titan_model.json, no {JOB_CONFIG} "
            "in the folders above it); pass --model NAME --flavor FLAVOR"
        )
    return (*found, None)


def convert_titan_to_hf(
    ckpt: Path,
    out: Path,
    registry: ModelRegistry,
    dtype: str = "auto",
    model: str | None = None,
    flavor: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
) -> Converted:
    """Write the model in titan checkpoint ``ckpt`` as an HF Llama folder ``out``."""
    require_checkpoint(ckpt)
    _check_out(out)
    family, flavor, args, base = _titan_args(ckpt, registry, model, flavor)
    if not isinstance(args, LlamaArgs):
        raise ConversionError(
            f"model family '{family}' is not a Llama; titan-to-hf exports Llama 2/3 models only"
        )
    from titan.models.llama.hf_weights import check_shapes, titan_to_hf

    state = load_model(ckpt, torch_dtype(dtype))
    check_shapes(state, args, f"the model in checkpoint '{ckpt}'")
    hf_state = titan_to_hf(state, args)
    dtype_name = _dtype_name(hf_state)
    hf_files.write_checkpoint(
        out, hf_config_from_args(args, family, dtype_name, base), hf_state, max_shard_bytes
    )
    _copy_side_files(ckpt, out)
    return Converted(family, flavor, args, sum(t.numel() for t in state.values()), dtype_name, out)
