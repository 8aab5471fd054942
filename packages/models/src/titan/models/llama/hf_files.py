"""Reading and writing Hugging Face checkpoint folders (config.json + safetensors).

Only safetensors are read: pickled ``pytorch_model.bin`` files can run code
when loaded, and every current Llama release ships safetensors. Large models
are written in shards of at most ``max_shard_bytes`` with the
``model.safetensors.index.json`` that transformers expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.models.errors import ConversionError

if TYPE_CHECKING:  # torch is imported by the functions that move tensors
    import torch

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)
"""Files that travel with the weights unchanged (titan does not interpret them)."""


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ConversionError(
            f"'{folder}' has no {CONFIG_FILE}; pass the folder of a Hugging Face checkpoint "
            "(as written by save_pretrained or downloaded from the hub)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(f"'{path}' is not valid JSON ({exc}); re-download it") from None


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ConversionError(
                f"{INDEX_FILE} names shards that are missing: {missing[:3]}; download all shards"
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = (
            f" (found {pickled[:2]}: re-save with save_pretrained(safe_serialization=True))"
            if pickled
            else ""
        )
        raise ConversionError(f"'{folder}' holds no .safetensors weights{hint}")
    return files


def read_weights(folder: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, by HF name; cast to ``dtype`` when given."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                tensor = f.get_tensor(name)
                state[name] = tensor.to(dtype) if dtype is not None else tensor
    return state


def write_checkpoint(
    folder: Path,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    max_shard_bytes: int = 5 * 1024**3,
) -> list[Path]:
    """Write ``config.json`` and the weights (sharded past ``max_shard_bytes``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {k: n for n, shard in zip(names, shards, strict=True) for k in shard},
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, str(folder / name), metadata={"format": "pt"})
    return [folder / n for n in names]
