"""Tokenize documents and pack them into fixed ``seq_len + 1`` windows, resumably.

Each document is encoded as ``BOS text EOS`` and appended to one running
token stream; every ``seq_len + 1`` tokens of it make one sample (inputs =
window[:-1], labels = window[1:]). No token is padding, and a document that
does not fit the current window simply continues in the next one.

Sharding: the documents are split between all readers of the job, that is
data-parallel ranks x DataLoader workers, with ``datasets``'
``split_dataset_by_node`` (whole files per reader when the file count
allows, else every n-th document), so no two readers see the same document.
We do the worker split ourselves rather than letting ``datasets`` do it
because its own worker split hands out whole files only: with fewer files
than workers the extra workers would sit idle.

Exact resume: the state of one reader is (epoch, the ``datasets`` stream's
own ``state_dict`` after the last document read, the tokens left over in the
buffer). torchdata's ``StatefulDataLoader`` collects it from every worker with
each batch, so a checkpoint restores the stream at the sample after the last
one the trainer received. Nothing here is shuffled: ``datasets``' streaming
shuffle buffer is not part of its state (see docs/data.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from titan.core.errors import ConfigError
from titan.core.tokenizers import Tokenizer


def reader_shard(dp_rank: int, dp_world_size: int) -> tuple[int, int]:
    """(index, count) of the calling reader among all ranks x workers of the job."""
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return dp_rank * workers + worker, dp_world_size * workers


def check_shard(state: dict[str, Any], shard: tuple[int, int]) -> None:
    """A saved position only makes sense for the same reader of the same split of the data."""
    saved = tuple(state.get("shard", shard))
    if saved != shard:
        raise ConfigError(
            f"the data loader state was saved by reader {saved[0]} of {saved[1]} (data-parallel "
            f"ranks x data.num_workers) but this is reader {shard[0]} of {shard[1]}; resume with "
            "the same data-parallel degree and data.num_workers to continue the data exactly"
        )


class PackedTextDataset(IterableDataset):
    """Documents (a streaming ``datasets.IterableDataset`` with a ``text`` column) -> windows."""

    def __init__(
        self,
        documents: Any,
        tokenizer: Tokenizer,
        seq_len: int,
        *,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        infinite: bool = True,
    ) -> None:
        self.documents = documents
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.infinite = infinite
        self._resume: dict[str, Any] | None = None  # set by load_state_dict, used by __iter__
        self._cursor: tuple[int, Any, list[int], int, tuple[int, int]] | None = None

    # -- iteration -----------------------------------------------------------

    def _open(self, shard: tuple[int, int], epoch: int, source_state: Any) -> Any:
        """This reader's share of the documents for ``epoch``, positioned at ``source_state``."""
        from datasets.distributed import split_dataset_by_node

        src = split_dataset_by_node(self.documents, rank=shard[0], world_size=shard[1])
        src.set_epoch(epoch)  # later epochs visit the files in another (seeded) order
        if source_state is not None:
            src.load_state_dict(source_state)
        return src

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shard = reader_shard(self.dp_rank, self.dp_world_size)
        state, self._resume = self._resume, None
        if state is not None:
            check_shard(state, shard)
            epoch, source_state, buffer = state["epoch"], state["source"], list(state["buffer"])
        else:
            epoch, source_state, buffer = 0, None, []
        window = self.seq_len + 1
        while True:
            resumed = source_state is not None
            src = self._open(shard, epoch, source_state)
            source_state = None
            docs = 0
            # .iter() (not iter(src)) so that `datasets` does not split by worker a second time.
            for batch in src.iter(batch_size=1):
                docs += 1
                text = batch["text"][0]
                if text:
                    buffer.extend(self.tokenizer.encode(text, bos=True, eos=True))
                pos = 0
                while len(buffer) - pos >= window:
                    chunk = torch.tensor(buffer[pos : pos + window], dtype=torch.long)
                    pos += window
                    self._cursor = (epoch, src, buffer, pos, shard)
                    yield chunk[:-1], chunk[1:]
                del buffer[:pos]
                self._cursor = (epoch, src, buffer, 0, shard)
            if docs == 0 and not resumed:
                return  # this reader's share is empty (more readers than documents/files)
            if not self.infinite:
                return
            epoch += 1
            self._cursor = (epoch, None, buffer, 0, shard)

    # -- checkpointing (torch Stateful; called by StatefulDataLoader) ---------

    def state_dict(self) -> dict[str, Any]:
        """Where this reader stands: after the last sample it yielded."""
        if self._resume is not None:
            return dict(self._resume)
        if self._cursor is None:
            shard = reader_shard(self.dp_rank, self.dp_world_size)
            return {"epoch": 0, "source": None, "buffer": [], "shard": list(shard)}
        epoch, src, buffer, pos, shard = self._cursor
        return {
            "epoch": epoch,
            "source": src.state_dict() if src is not None else None,
            "buffer": buffer[pos:],
            "shard": list(shard),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` at the next ``iter()``."""
        self._resume = dict(state)
        self._cursor = None
