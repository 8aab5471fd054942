"""Build the training (and validation) data loader for one data-parallel rank."""

from __future__ import annotations

from typing import Any

from titan.core.data.packing import PackedTextDataset
from titan.core.data.sources import load_documents
from titan.core.tokenizers import Tokenizer


def build_dataloader(
    *,
    dataset: str,
    dataset_path: str,
    tokenizer: Tokenizer,
    seq_len: int,
    batch_size: int,
    dp_rank: int = 0,
    dp_world_size: int = 1,
    split: str = "train",
    infinite: bool = True,
    num_workers: int = 0,
) -> Any:
    """A torchdata ``StatefulDataLoader`` of (inputs, labels) batches; its state is checkpointable."""
    from datasets.distributed import split_dataset_by_node
    from torchdata.stateful_dataloader import StatefulDataLoader

    docs = load_documents(dataset, dataset_path, split)
    if dp_world_size > 1:
        docs = split_dataset_by_node(docs, rank=dp_rank, world_size=dp_world_size)
    packed = PackedTextDataset(docs, tokenizer, seq_len, infinite=infinite)
    return StatefulDataLoader(packed, batch_size=batch_size, num_workers=num_workers)
