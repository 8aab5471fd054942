"""Reading checkpoints without unpickling arbitrary objects.

Tensors are read by DCP with ``weights_only``, non-tensor values with
``torch.load(weights_only=True)``, and the checkpoint index (``.metadata``) through an
unpickler that accepts only DCP's own metadata classes, so a checkpoint from elsewhere
cannot run code when it is loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from titan.core.checkpoint_errors import CheckpointError


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` index, refusing every class that is not DCP metadata."""

    _ALLOWED = {
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.distributed.checkpoint."):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and (
                dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)
            ):
                return obj
        raise pickle.UnpicklingError(
            f"checkpoint metadata refers to {module}.{name}, which is not DCP metadata; "
            "refusing to load it (only load checkpoints you trust)"
        )


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader, with the metadata index read by :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner, but non-tensor values are read with ``weights_only=True``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def read_metadata(path: Path) -> Metadata:
    """The DCP index of checkpoint folder ``path`` (safe unpickling)."""
    return SafeFileSystemReader(str(path)).read_metadata()


def saved_keys(path: Path) -> set[str]:
    """Flattened keys (``model.layers.0.attention.wq.weight``...) stored in a checkpoint."""
    return set(read_metadata(path).state_dict_metadata)


def read_state(path: Path, name: str) -> dict[str, Any]:
    """The tensors saved under state ``name`` of checkpoint ``path``, keyed below ``name``.

    For tests and tools on one process: ``read_state(p, "ema")["shadow.weight"]``.
    """
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    flat: dict[str, Any] = {}
    for key, meta in read_metadata(path).state_dict_metadata.items():
        if key.startswith(f"{name}.") and isinstance(meta, TensorStorageMetadata):
            flat[key] = torch.empty(meta.size, dtype=meta.properties.dtype)
    if not flat:
        raise CheckpointError(f"checkpoint '{path}' has no tensors under state '{name}'")
    safe_load(flat, path)
    return {key[len(name) + 1 :]: value for key, value in flat.items()}


@contextlib.contextmanager
def quiet_single_process() -> Iterator[None]:
    """DCP warns on every call without a process group; one process is a normal case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to.*single process")
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        yield


def safe_load(states: dict[str, Any], path: Path | str) -> None:
    """``dcp.load`` of checkpoint ``path`` into ``states`` without unpickling arbitrary objects."""
    with quiet_single_process():
        dcp.load(
            states,
            storage_reader=SafeFileSystemReader(str(path)),
            planner=SafeLoadPlanner(),
            no_dist=not distributed(),
        )


def distributed() -> bool:
    """Whether a process group is up (else DCP runs with ``no_dist``)."""
    return dist.is_available() and dist.is_initialized()
