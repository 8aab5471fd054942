"""titan's checkpoint format on disk: a torch.distributed.checkpoint (DCP) folder.

The model's weights live under the state key ``"model"`` (as
``titan.core.checkpoint`` writes them), so ``titan run`` loads a converted
checkpoint with ``checkpoint.initial_load_path`` and can read just the model
out of any training checkpoint. A converted folder also holds
``titan_model.json``: the model family, the matching flavor if any, and the
full args, which is what ``titan convert titan-to-hf`` needs to write a
``config.json`` and what ``--model.flavor=<folder>/titan_model.json`` trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.models.errors import ConversionError

if TYPE_CHECKING:  # torch stays out of import time: config validation reads titan_model.json
    import torch

MODEL_KEY = "model"
MODEL_FILE = "titan_model.json"
FORMAT = "titan-model/1"


def save_model(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` as the ``"model"`` entry of a single-process DCP checkpoint."""
    import torch.distributed.checkpoint as dcp

    from titan.core.checkpoint import quiet_single_process

    folder.mkdir(parents=True, exist_ok=True)
    with quiet_single_process():
        dcp.save({MODEL_KEY: state}, checkpoint_id=str(folder), no_dist=True)


def require_checkpoint(folder: Path) -> None:
    """Fail clearly unless ``folder`` is a complete DCP checkpoint."""
    if not (folder / ".metadata").is_file():
        raise ConversionError(
            f"'{folder}' is not a titan (DCP) checkpoint (no .metadata file); pass a folder "
            "written by `titan convert hf-to-titan` or a <dump_folder>/checkpoint/step-N folder"
        )


def load_model(folder: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Only the model weights of a DCP checkpoint (optimizer and other states are skipped).

    Tensors are allocated from the checkpoint's own metadata, so no model
    needs to be built; a checkpoint written by N ranks reads in one process.
    Read like a resume reads (``titan.core.checkpoint.safe_load``): nothing in
    the folder is unpickled beyond plain data.
    """
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from titan.core.checkpoint import read_metadata, safe_load

    require_checkpoint(folder)
    metadata = read_metadata(folder)
    prefix = MODEL_KEY + "."
    state = {
        key[len(prefix) :]: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if not state:
        raise ConversionError(
            f"checkpoint '{folder}' holds no model weights (no '{MODEL_KEY}.*' entries)"
        )
    safe_load({MODEL_KEY: state}, folder)
    return {k: v.to(dtype) if dtype is not None else v for k, v in state.items()}


def write_model_file(
    folder: Path, family: str, flavor: str | None, args: Any, **extra: Any
) -> Path:
    """Write ``titan_model.json``: what model the weights in ``folder`` belong to."""
    path = folder / MODEL_FILE
    body = {"format": FORMAT, "family": family, "flavor": flavor, "args": args.to_dict(), **extra}
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def read_model_file(folder: Path) -> dict[str, Any] | None:
    """The parsed ``titan_model.json`` of ``folder``, or None when there is none."""
    path = folder / MODEL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(
            f"'{path}' is not valid JSON ({exc}); re-run `titan convert hf-to-titan`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConversionError(
            f"'{path}' is not a {FORMAT} file; re-run `titan convert hf-to-titan`"
        )
    return data
