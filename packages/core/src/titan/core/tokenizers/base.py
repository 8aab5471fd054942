"""The tokenizer interface the trainer and data pipeline rely on, and the loader.

``load_tokenizer(path)`` picks the implementation from the file: a Hugging
Face ``tokenizer.json`` (or a folder holding one). An empty path means the
byte-level BPE tokenizer bundled with titan (trained on the bundled corpus by
scripts/train_tokenizer.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from titan.core.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_TOKENIZER = ASSETS / "tokenizers" / "tinyshakespeare_bpe.json"


@runtime_checkable
class Tokenizer(Protocol):
    """What titan needs from a tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of ids the model's embedding must cover (specials included)."""
        ...

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """Load the tokenizer in ``path`` (empty: the bundled one), choosing by file format."""
    p = Path(path) if path else BUNDLED_TOKENIZER
    if p.is_dir() and (p / "tokenizer.json").is_file():
        p = p / "tokenizer.json"
    if not p.exists():
        raise ConfigError(
            f"tokenizer file '{p}' does not exist; set model.tokenizer_path to a tokenizer.json"
        )
    if p.suffix == ".json":
        from titan.core.tokenizers.hf import HFTokenizer

        return HFTokenizer(p)
    raise ConfigError(
        f"cannot tell the format of tokenizer file '{p}'; use a Hugging Face tokenizer.json"
    )
