"""Build the training (and validation) data loader for one data-parallel rank."""

from __future__ import annotations

from typing import Any

from titan.core.data.packing import PackedTextDataset
from titan.core.data.sources import load_documents
from titan.core.tokenizers import Tokenizer


def build_dataloader(
    config: Any,
    tokenizer: Tokenizer,
    *,
    dp_rank: int = 0,
    dp_world_size: int = 1,
    split: str = "train",
) -> Any:
    """A torchdata ``StatefulDataLoader`` of (inputs, labels) batches; its state is checkpointable."""
    from datasets.distributed import split_dataset_by_node
    from torchdata.stateful_dataloader import StatefulDataLoader

    t = config.training
    docs = load_documents(t.dataset, t.dataset_path, split)
    if dp_world_size > 1:
        docs = split_dataset_by_node(docs, rank=dp_rank, world_size=dp_world_size)
    packed = PackedTextDataset(docs, tokenizer, t.seq_len, infinite=split == "train")
    return StatefulDataLoader(packed, batch_size=t.local_batch_size, num_workers=0)
