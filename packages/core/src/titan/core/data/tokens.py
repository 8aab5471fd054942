"""Pre-tokenized datasets: the format ``titan data prepare`` writes and training reads back.

A folder holds ``titan_tokens.json`` (the index) and, per split, numbered
``<split>-00000.npy`` shards: flat arrays of token ids (uint16 when the
vocabulary fits, else uint32), each document as ``BOS ids EOS``, documents
back to back in their original order. ``.npy`` because numpy memory-maps it:
a reader touches only the windows it reads, whatever the size of the shards.

The index records the tokenizer (size, special ids, a fingerprint of its
behaviour), so that training with another tokenizer is refused instead of
silently learning from the wrong ids. The sequence length is chosen at
training time: the same folder serves any ``training.seq_len``.

Reading (:class:`TokenWindowDataset`): window ``k`` of the split is tokens
``[k (L+1), (k+1)(L+1))`` of the concatenated shards, exactly the windows
on-the-fly packing produces. Window ``k`` goes to reader ``k mod readers``
(readers = data-parallel ranks x workers), so the readers' windows are
disjoint, and a reader's whole state is its epoch and how many windows it has
yielded: resuming is exact and costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from titan.core.data.packing import check_shard, reader_shard
from titan.core.data.sources import TOKENS_INDEX
from titan.core.errors import ConfigError
from titan.core.tokenizers import Tokenizer, tokenizer_fingerprint

FORMAT = "titan-tokens"
VERSION = 1
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB as uint16


def read_index(folder: Path) -> dict[str, Any]:
    path = folder / TOKENS_INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read '{path}' ({exc}); re-run `titan data prepare` for this folder"
        ) from None
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ConfigError(
            f"'{path}' is not a titan token index of version {VERSION}; re-run `titan data prepare`"
        )
    return index


def check_tokenizer(index: dict[str, Any], tokenizer: Tokenizer, folder: Path) -> None:
    """Refuse data tokenized with another tokenizer than the run's."""
    saved = index["tokenizer"]
    if saved["fingerprint"] != tokenizer_fingerprint(tokenizer):
        raise ConfigError(
            f"the tokens in '{folder}' were made with another tokenizer ({saved['path']}, "
            f"vocabulary {saved['vocab_size']}) than this run's (vocabulary "
            f"{tokenizer.vocab_size}); set model.tokenizer_path to the one used by "
            "`titan data prepare`, or prepare the data again with this tokenizer"
        )


@dataclass
class SplitSummary:
    """What ``write_token_split`` wrote."""

    documents: int
    tokens: int
    shards: list[dict[str, Any]]


def write_token_split(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    folder: Path,
    split: str,
    *,
    tokenizer_path: str = "",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    on_document: Callable[[int, int], None] | None = None,
) -> SplitSummary:
    """Tokenize ``texts`` into ``folder`` as ``split`` and record it in the index.

    ``on_document(documents, tokens)`` is called after each document (for a
    progress bar). Shards are written whole and the index last, so a crash
    leaves either the old index or the complete new one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    shards: list[dict[str, Any]] = []
    pending: list[np.ndarray] = []
    pending_tokens = documents = total = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if not pending_tokens:
            return
        name = f"{split}-{len(shards):05d}.npy"
        np.save(folder / name, np.concatenate(pending).astype(dtype, copy=False))
        shards.append({"file": name, "tokens": pending_tokens})
        pending, pending_tokens = [], 0

    for text in texts:
        if text:
            ids = np.asarray(tokenizer.encode(text, bos=True, eos=True), dtype=np.int64)
            pending.append(ids)
            pending_tokens += len(ids)
            total += len(ids)
        documents += 1
        if pending_tokens >= shard_tokens:
            flush()
        if on_document is not None:
            on_document(documents, total)
    flush()
    if not documents:
        raise ConfigError(f"the {split} split has no documents; nothing to prepare")

    index_path = folder / TOKENS_INDEX
    index = read_index(folder) if index_path.is_file() else {}
    fingerprint = tokenizer_fingerprint(tokenizer)
    if index and index["tokenizer"]["fingerprint"] != fingerprint:
        index["splits"] = {}  # other splits were made with another tokenizer: drop them
    index.update(
        format=FORMAT,
        version=VERSION,
        dtype=np.dtype(dtype).name,
        tokenizer={
            "path": tokenizer_path or "(bundled)",
            "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
            "fingerprint": fingerprint,
        },
    )
    index.setdefault("splits", {})[split] = {
        "documents": documents,
        "tokens": total,
        "shards": shards,
    }
    tmp = index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    tmp.replace(index_path)
    return SplitSummary(documents, total, shards)


class TokenStream:
    """The shards of one split as one memory-mapped, read-only array of tokens."""

    def __init__(self, folder: Path, index: dict[str, Any], split: str) -> None:
        splits = index.get("splits", {})
        if split not in splits:
            raise ConfigError(
                f"'{folder}' has no pre-tokenized '{split}' split (it has: "
                f"{', '.join(splits) or 'none'}); run `titan data prepare --split {split}`"
            )
        self.folder = folder
        self.files = [s["file"] for s in splits[split]["shards"]]
        sizes = [int(s["tokens"]) for s in splits[split]["shards"]]
        self.starts = np.cumsum([0, *sizes])
        self._arrays: list[np.ndarray] | None = None  # opened lazily: after fork, in each worker

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _open(self) -> list[np.ndarray]:
        if self._arrays is None:
            try:
                self._arrays = [np.load(self.folder / f, mmap_mode="r") for f in self.files]
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read token shards in '{self.folder}' ({exc}); prepare the data again"
                ) from None
        return self._arrays

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)``, across shard boundaries if need be."""
        arrays = self._open()
        out = []
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        i, pos, left = first, start, length
        while left > 0:
            offset = pos - int(self.starts[i])
            piece = arrays[i][offset : offset + left]
            out.append(piece)
            pos += len(piece)
            left -= len(piece)
            i += 1
        return np.concatenate(out) if len(out) > 1 else out[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # memory maps are reopened in workers


class TokenWindowDataset(IterableDataset):
    """Fixed ``seq_len + 1`` windows of a pre-tokenized split, sharded and resumable."""

    def __init__(
        self,
        folder: Path,
        tokenizer: Tokenizer,
        seq_len: int,
        split: str,
        *,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        infinite: bool = True,
    ) -> None:
        index = read_index(folder)
        check_tokenizer(index, tokenizer, folder)
        self.stream = TokenStream(folder, index, split)
        self.window = seq_len + 1
        self.num_windows = len(self.stream) // self.window
        if self.num_windows < dp_world_size:
            raise ConfigError(
                f"the '{split}' split in '{folder}' has {len(self.stream)} tokens: "
                f"{self.num_windows} windows of training.seq_len+1 = {self.window}, fewer than the "
                f"{dp_world_size} data-parallel ranks; prepare more data or lower training.seq_len"
            )
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.infinite = infinite
        self._resume: dict[str, Any] | None = None
        self._position: tuple[int, int, tuple[int, int]] | None = None  # epoch, yielded, shard

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shard = reader_shard(self.dp_rank, self.dp_world_size)
        state, self._resume = self._resume, None
        epoch, done = 0, 0
        if state is not None:
            check_shard(state, shard)
            epoch, done = int(state["epoch"]), int(state["yielded"])
        mine = range(shard[0], self.num_windows, shard[1])  # this reader's window numbers
        if not len(mine):
            return
        while True:
            for k in mine[done:]:
                chunk = torch.from_numpy(
                    self.stream.read(k * self.window, self.window).astype(np.int64)
                )
                done += 1
                self._position = (epoch, done, shard)
                yield chunk[:-1], chunk[1:]
            if not self.infinite:
                return
            epoch, done = epoch + 1, 0
            self._position = (epoch, done, shard)

    def state_dict(self) -> dict[str, Any]:
        if self._resume is not None:
            return dict(self._resume)
        if self._position is None:
            shard = reader_shard(self.dp_rank, self.dp_world_size)
            return {"epoch": 0, "yielded": 0, "shard": list(shard)}
        epoch, done, shard = self._position
        return {"epoch": epoch, "yielded": done, "shard": list(shard)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)
        self._position = None
