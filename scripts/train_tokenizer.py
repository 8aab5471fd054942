"""Train the small byte-level BPE tokenizer bundled with titan.

    uv run python scripts/train_tokenizer.py

Reads the bundled tinyshakespeare training split and writes
packages/core/src/titan/core/assets/tokenizers/tinyshakespeare_bpe.json:
2,048 entries, ids 0 and 1 being <|begin_of_text|> and <|end_of_text|>
(the Llama 3 names). Deterministic: re-running gives the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ASSETS = Path(__file__).resolve().parents[1] / "packages/core/src/titan/core/assets"
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>"]


def main() -> None:
    lines = (ASSETS / "tinyshakespeare/train.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    out = ASSETS / "tokenizers/tinyshakespeare_bpe.json"
    tokenizer.save(str(out))
    print(f"wrote {out} ({tokenizer.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
