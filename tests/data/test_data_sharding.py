"""Data-parallel ranks (and their workers) read disjoint documents that together cover the data."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from titan.core.data.loader import build_dataloader, build_dataset
from titan.core.data.tokens import write_token_split


def _window_rows(batches) -> list[list[int]]:
    """Each (inputs, labels) sample of a loader or dataset back as its seq_len+1 window."""
    rows = []
    for inputs, labels in batches:
        if inputs.dim() == 1:  # a dataset yields single samples, a loader batches
            inputs, labels = inputs[None], labels[None]
        rows.extend(torch.cat([inputs, labels[:, -1:]], dim=1).tolist())
    return rows


def _documents(rows: list[list[int]], tokenizer) -> list[int]:
    """Numbers of the documents whose start ("docN says") is in one reader's window stream."""
    text = tokenizer.decode([t for row in rows for t in row])
    return [int(n) for n in re.findall(r"doc(\d+) says", text)]


def _reader_rows(monkeypatch, config, tokenizer, rank, world, worker, workers):
    """The windows reader (rank, worker) produces, read in this process as that worker would."""
    from titan.core.data import packing

    info = SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(packing, "get_worker_info", lambda: info)
    dataset = build_dataset(config, tokenizer, dp_rank=rank, dp_world_size=world, infinite=False)
    rows = _window_rows(dataset)
    monkeypatch.undo()
    return rows


def _config(make_config, folder, workers=0):
    return make_config(
        **{
            "training.dataset_path": str(folder),
            "training.seq_len": 8,
            "training.local_batch_size": 1,
            "data.num_workers": workers,
        }
    )


@pytest.mark.parametrize("files", [1, 4])  # every n-th document / whole files per reader
@pytest.mark.parametrize("workers", [1, 2])
def test_readers_get_disjoint_documents_covering_the_dataset(
    monkeypatch, corpus, make_config, bundled_tokenizer, files, workers
):
    docs = 48
    config = _config(make_config, corpus(files=files, docs=docs))
    seen = [
        _documents(
            _reader_rows(monkeypatch, config, bundled_tokenizer, rank, 2, worker, workers),
            bundled_tokenizer,
        )
        for rank in (0, 1)
        for worker in range(workers)
    ]
    everything = [d for reader in seen for d in reader]
    assert len(everything) == len(set(everything))  # no document read twice, by anyone
    # Only a reader's last partial window (shorter than a document) is dropped.
    assert len(set(everything)) >= docs - len(seen)
    assert max(map(len, seen)) - min(map(len, seen)) <= docs // 4  # and the split is balanced


@pytest.mark.parametrize("files", [1, 4])
def test_rank_loaders_with_worker_processes_deliver_exactly_their_readers_windows(
    monkeypatch, corpus, make_config, bundled_tokenizer, files
):
    config = _config(make_config, corpus(files=files, docs=48), workers=2)
    for rank in (0, 1):
        loader = build_dataloader(
            config, bundled_tokenizer, dp_rank=rank, dp_world_size=2, infinite=False
        )
        delivered = sorted(_window_rows(loader))
        expected = sorted(
            row
            for worker in (0, 1)
            for row in _reader_rows(monkeypatch, config, bundled_tokenizer, rank, 2, worker, 2)
        )
        assert delivered == expected and delivered


def test_rank_loaders_in_process_split_documents(corpus, make_config, bundled_tokenizer):
    config = _config(make_config, corpus(files=1, docs=30))
    seen = [
        _documents(
            _window_rows(
                build_dataloader(
                    config, bundled_tokenizer, dp_rank=r, dp_world_size=2, infinite=False
                )
            ),
            bundled_tokenizer,
        )
        for r in (0, 1)
    ]
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) >= 30 - 2


def test_pretokenized_windows_are_dealt_round_robin_to_ranks(
    tmp_path, corpus, make_config, bundled_tokenizer, doc_text
):
    out = tmp_path / "tokens"
    write_token_split((doc_text(i) for i in range(40)), bundled_tokenizer, out, "train")
    config = make_config(
        **{"training.dataset_path": str(out), "training.seq_len": 8, "training.local_batch_size": 1}
    )

    def windows(rank: int, world: int) -> list[tuple[int, ...]]:
        loader = build_dataloader(
            config, bundled_tokenizer, dp_rank=rank, dp_world_size=world, infinite=False
        )
        return [tuple(x[0].tolist()) for x, _ in loader]

    everything = windows(0, 1)
    rank0, rank1 = windows(0, 2), windows(1, 2)
    assert len(everything) > 10
    assert rank0 == everything[0::2] and rank1 == everything[1::2]  # disjoint, complete
