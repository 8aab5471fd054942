"""Tokenizers: one small interface, several file formats, chosen from the file given."""

from titan.core.tokenizers.base import (
    Tokenizer,
    check_vocab_size,
    load_tokenizer,
    tokenizer_fingerprint,
)

__all__ = ["Tokenizer", "check_vocab_size", "load_tokenizer", "tokenizer_fingerprint"]
