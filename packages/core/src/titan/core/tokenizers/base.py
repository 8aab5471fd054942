"""The tokenizer interface the trainer and data pipeline rely on, and the loader.

``load_tokenizer(path)`` picks the implementation from the file itself, not
from a setting, because the three formats Llama checkpoints ship with are
easy to tell apart and users should not have to name them:

* a Hugging Face ``tokenizer.json`` (JSON text),
* a Llama 3 / tiktoken ``tokenizer.model`` (lines of ``base64-token rank``),
* a SentencePiece ``.model`` (binary protobuf; Llama 2).

A folder is searched for ``tokenizer.model``, ``original/tokenizer.model``
(the Hugging Face Hub layout of Meta's repositories) and ``tokenizer.json``.
An empty path means the byte-level BPE tokenizer bundled with titan (trained
on the bundled corpus by scripts/train_tokenizer.py).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from titan.core.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_TOKENIZER = ASSETS / "tokenizers" / "tinyshakespeare_bpe.json"
TEST_TIKTOKEN = ASSETS / "tokenizers" / "test_tiktoken.model"

# What a folder may hold, in order of preference (Meta's own files first).
FOLDER_CANDIDATES = ("tokenizer.model", "original/tokenizer.model", "tokenizer.json")
# A tiktoken ranks line: base64 token, one space, integer rank.
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/]+=* \d+$")
# Encoded to fingerprint a tokenizer's behaviour (see tokenizer_fingerprint).
_PROBE = "Hello, world! 123 Ünïcödé\n\tFirst Citizen: Before we proceed any further, hear me speak."

TokenizerFormat = Literal["hf", "tiktoken", "sentencepiece"]


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


class BosEosIds:
    """``bos_id``/``eos_id`` from ``_bos``/``_eos``, shared by every tokenizer format."""

    _bos: int
    _eos: int

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        """``ids`` framed as a document: BOS first and EOS last when asked."""
        return [self._bos] * bos + ids + [self._eos] * eos


def resolve_tokenizer_file(path: str | Path | None) -> Path:
    """The tokenizer file ``path`` names (a file, or a folder holding one)."""
    p = Path(path) if path else BUNDLED_TOKENIZER
    if p.is_dir():
        for name in FOLDER_CANDIDATES:
            if (p / name).is_file():
                return p / name
        raise ConfigError(
            f"tokenizer folder '{p}' holds none of {', '.join(FOLDER_CANDIDATES)}; set "
            "model.tokenizer_path to the tokenizer file itself"
        )
    if not p.is_file():
        raise ConfigError(
            f"tokenizer file '{p}' does not exist; set model.tokenizer_path to a tokenizer.json, "
            "a Llama 3 tokenizer.model or a SentencePiece .model (empty: the bundled tokenizer)"
        )
    return p


def detect_format(path: Path) -> TokenizerFormat:
    """Tell the format from the file's first bytes (not its name, which is often just .model)."""
    with path.open("rb") as f:
        head = f.read(4096)
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        return "hf"
    first_line = stripped.split(b"\n", 1)[0].strip()
    if _TIKTOKEN_LINE.match(first_line):
        return "tiktoken"
    if path.suffix == ".json":
        return "hf"
    return "sentencepiece"


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """Load the tokenizer in ``path`` (empty: the bundled one), choosing by file format."""
    p = resolve_tokenizer_file(path)
    fmt = detect_format(p)
    if fmt == "hf":
        from titan.core.tokenizers.hf import HFTokenizer

        return HFTokenizer(p)
    if fmt == "tiktoken":
        from titan.core.tokenizers.tiktoken_model import Llama3Tokenizer

        return Llama3Tokenizer(p)
    from titan.core.tokenizers.sentencepiece_model import SentencePieceTokenizer

    return SentencePieceTokenizer(p)


def check_vocab_size(tokenizer: Tokenizer, model_vocab_size: int, model: str) -> None:
    """Fail before training if the tokenizer can emit ids the model's embedding lacks.

    A too-small embedding does not fail loudly on every machine (an
    out-of-range index on GPU is a device-side assert much later), so this is
    checked up front. A larger model vocabulary is fine (ids are padded).
    """
    if tokenizer.vocab_size > model_vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model {model} has a vocabulary "
            f"of {model_vocab_size}; set model.vocab_size={tokenizer.vocab_size} or use a "
            "matching tokenizer (model.tokenizer_path)"
        )


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A short hash of how ``tokenizer`` behaves, to detect data tokenized by another one.

    Hashing behaviour (vocabulary size, special ids and the ids of a probe
    text) rather than the file works for every format and survives the file
    being copied or renamed.
    """
    ids = tokenizer.encode(_PROBE, bos=True, eos=True)
    blob = f"{tokenizer.vocab_size}|{tokenizer.bos_id}|{tokenizer.eos_id}|{ids}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
