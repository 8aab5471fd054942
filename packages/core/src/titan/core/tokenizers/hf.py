"""Hugging Face ``tokenizers`` files (tokenizer.json), e.g. the Hub's Llama 3 and Llama 2 repos.

BOS/EOS are looked up by their usual names because tokenizer.json has no
field for them; titan adds them itself (``add_special_tokens=False``) so the
same packing code works for every format.
"""

from __future__ import annotations

from pathlib import Path

from titan.core.errors import ConfigError
from titan.core.tokenizers.base import BosEosIds

BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<|endoftext|>", "[BOS]")
EOS_CANDIDATES = ("<|end_of_text|>", "</s>", "<|endoftext|>", "[EOS]")


class HFTokenizer(BosEosIds):
    """A Hugging Face fast tokenizer loaded from a tokenizer.json file."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _Tok

        try:
            self.path = path
            self._tok = _Tok.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on parse errors
            raise ConfigError(
                f"'{path}' is not a valid tokenizer.json: {exc}; point model.tokenizer_path at "
                "a tokenizer.json saved by Hugging Face tokenizers/transformers"
            ) from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1
        self._bos = next((vocab[t] for t in BOS_CANDIDATES if t in vocab), None)
        self._eos = next((vocab[t] for t in EOS_CANDIDATES if t in vocab), None)
        if self._bos is None or self._eos is None:
            raise ConfigError(
                f"tokenizer '{path}' has no begin/end-of-text token (looked for "
                f"{BOS_CANDIDATES[0]} / {EOS_CANDIDATES[0]} and common alternatives); add them"
            )

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, bos, eos)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)
