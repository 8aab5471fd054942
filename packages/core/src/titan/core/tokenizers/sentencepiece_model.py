"""SentencePiece ``.model`` files: the Llama 2 tokenizer (32,000 pieces, BOS 1, EOS 2)."""

from __future__ import annotations

from pathlib import Path

from titan.core.errors import ConfigError
from titan.core.tokenizers.base import BosEosIds


class SentencePieceTokenizer(BosEosIds):
    """A SentencePiece model; BOS/EOS are the ids the model file declares."""

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.path = path
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ConfigError(
                f"'{path}' is neither a Hugging Face tokenizer.json, a Llama 3 tiktoken file nor "
                f"a SentencePiece model ({exc}); point model.tokenizer_path at a tokenizer file"
            ) from None
        self._bos = int(self._sp.bos_id())
        self._eos = int(self._sp.eos_id())
        if self._bos < 0 or self._eos < 0:
            raise ConfigError(
                f"SentencePiece model '{path}' defines no BOS/EOS piece (bos_id={self._bos}, "
                f"eos_id={self._eos}); retrain it with bos_id/eos_id set (Llama 2 uses 1 and 2)"
            )

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._sp.encode(text)
        return self._wrap(ids, bos, eos)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))
