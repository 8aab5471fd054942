"""Pack tokenized documents into fixed ``seq_len + 1`` windows, resumably.

Documents are encoded with BOS/EOS and concatenated; every ``seq_len + 1``
tokens make one sample (inputs = window[:-1], labels = window[1:]), so no
token is padding. The state (the source's position, the unfinished token
buffer and the epoch) is saved in checkpoints, so a resumed run sees exactly
the samples an uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import torch
from titan.core.errors import ConfigError
from titan.core.tokenizers import Tokenizer
from torch.utils.data import IterableDataset


class PackedTextDataset(IterableDataset):
    def __init__(
        self,
        source: Any,
        tokenizer: Tokenizer,
        seq_len: int,
        text_column: str = "text",
        infinite: bool = True,
    ) -> None:
        self.source = source
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.text_column = text_column
        self.infinite = infinite
        self._buffer: list[int] = []
        self._epoch = 0
        self._start_of_epoch = source.state_dict()  # to rewind the source for the next epoch

    def __iter__(self):
        window = self.seq_len + 1
        while True:
            self.source.set_epoch(self._epoch)
            seen = 0
            for doc in self.source:
                seen += 1
                if self.text_column not in doc:
                    raise ConfigError(
                        f"dataset has no text column '{self.text_column}' (columns: "
                        f"{', '.join(doc)}); set the text column in the config"
                    )
                self._buffer.extend(
                    self.tokenizer.encode(doc[self.text_column], bos=True, eos=True)
                )
                while len(self._buffer) >= window:
                    chunk = torch.tensor(self._buffer[:window], dtype=torch.long)
                    del self._buffer[:window]
                    yield chunk[:-1], chunk[1:]
            if seen == 0 and self._epoch == 0:
                raise ConfigError("the dataset is empty: it has no documents")
            if not self.infinite:
                return
            self._epoch += 1
            self.source.load_state_dict(self._start_of_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.state_dict(),
            "buffer": list(self._buffer),
            "epoch": self._epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self._buffer = list(state["buffer"])
        self._epoch = int(state["epoch"])
