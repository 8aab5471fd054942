"""Tokenizers: one small interface, several file formats, chosen from the file given."""

from titan.core.tokenizers.base import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
