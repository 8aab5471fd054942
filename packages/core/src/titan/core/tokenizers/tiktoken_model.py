"""The Llama 3 tokenizer: a tiktoken ranks file plus Llama 3's 256 special tokens.

Meta's ``tokenizer.model`` for Llama 3 is not a SentencePiece model but a
text file of ``base64-token rank`` lines (128,000 of them). The 256 special
tokens (begin/end of text, header ids, end of turn, reserved ones) are not in
the file: the model code appends them after the last rank, so they are
reproduced here exactly as Meta's reference tokenizer defines them. The
regex is Llama 3's pre-tokenization pattern.

The ranks file is parsed here rather than with ``tiktoken.load`` because
that helper caches every file it reads under a key derived from its *path*,
so a changed file at the same path would silently keep its old ranks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from pathlib import Path

from titan.core.errors import ConfigError
from titan.core.tokenizers.base import BosEosIds

# Llama 3's pre-tokenizer split pattern (Meta's llama3/tokenizer.py).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_RESERVED_SPECIAL_TOKENS = 256
# tiktoken's Rust core can overflow its stack on huge inputs or very long runs
# of (non-)whitespace, so Meta's tokenizer cuts text first; we do the same.
MAX_ENCODE_CHARS = 400_000
MAX_RUN_CHARS = 25_000


def llama3_special_tokens(n: int = NUM_RESERVED_SPECIAL_TOKENS) -> list[str]:
    """Llama 3's special tokens, in id order (ids start right after the last rank)."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|reserved_special_token_2|>",
        "<|reserved_special_token_3|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_4|>",
        "<|eot_id|>",  # end of turn
    ]
    return named + [f"<|reserved_special_token_{i}|>" for i in range(5, n - 5)]


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken ranks file; ranks must be 0..N-1 so special ids can follow them."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ConfigError(
                f"line {lineno} of tokenizer file '{path}' is not 'base64-token rank': "
                f"{line[:60]!r}; use an unmodified Llama 3 tokenizer.model"
            ) from None
    if not ranks:
        raise ConfigError(f"tokenizer file '{path}' is empty; use a Llama 3 tokenizer.model")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConfigError(
            f"tokenizer file '{path}' has gaps or duplicates in its ranks (expected 0..{len(ranks) - 1}); "
            "use an unmodified Llama 3 tokenizer.model"
        )
    return ranks


def _split_long_runs(text: str, max_run: int) -> Iterator[str]:
    """Cut ``text`` so no piece holds more than ``max_run`` consecutive (non-)space chars."""
    start = 0
    run = 0
    in_space: bool | None = None
    for i, ch in enumerate(text):
        is_space = ch.isspace()
        run = run + 1 if is_space == in_space else 1
        in_space = is_space
        if run > max_run:
            yield text[start:i]
            start = i
            run = 1
    yield text[start:]


class Llama3Tokenizer(BosEosIds):
    """Llama 3's tokenizer (tiktoken BPE) with its special tokens; ids match Meta's."""

    def __init__(self, path: Path) -> None:
        import tiktoken

        ranks = read_ranks(path)
        self.path = path
        self.num_base_tokens = len(ranks)
        self.special_tokens = {
            token: self.num_base_tokens + i for i, token in enumerate(llama3_special_tokens())
        }
        self._enc = tiktoken.Encoding(
            name=path.name,
            pat_str=LLAMA3_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self._bos = self.special_tokens["<|begin_of_text|>"]
        self._eos = self.special_tokens["<|end_of_text|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]

    @property
    def vocab_size(self) -> int:
        return self.num_base_tokens + len(self.special_tokens)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Encode plain text; special-token strings inside ``text`` stay ordinary text."""
        ids: list[int] = [self._bos] if bos else []
        for i in range(0, len(text), MAX_ENCODE_CHARS):
            for piece in _split_long_runs(text[i : i + MAX_ENCODE_CHARS], MAX_RUN_CHARS):
                ids.extend(self._enc.encode_ordinary(piece))
        if eos:
            ids.append(self._eos)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)
