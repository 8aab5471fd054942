"""The three tokenizer formats load from their files and give the ids their own libraries give."""

from __future__ import annotations

import base64
import io
import json
import pickle
from pathlib import Path

import pytest

from titan.core.errors import ConfigError
from titan.core.tokenizers import check_vocab_size, load_tokenizer, tokenizer_fingerprint
from titan.core.tokenizers.base import BUNDLED_TOKENIZER, TEST_TIKTOKEN, detect_format

SAMPLES = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "  leading spaces, trailing tabs\t\t\n\n\nand blank lines   ",
    "Numbers 1234567 and 3.14159; contractions: I'm, you'll, they'd, it's.",
    "Unicode: naïve café, Ελληνικά, 日本語, emoji 🙂, math ∑x².",
    "<|begin_of_text|> stays text when it appears inside a document",
    "",
]

# Written out here, independently of titan's module: Meta's Llama 3 tokenizer definition.
META_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
META_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]


@pytest.fixture(scope="module")
def reference_tiktoken():
    """tiktoken's own Encoding for the test file, built the way Meta's reference code does."""
    import tiktoken

    ranks = {}
    for line in TEST_TIKTOKEN.read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    specials = {t: len(ranks) + i for i, t in enumerate(META_SPECIALS)}
    return tiktoken.Encoding(
        "reference", pat_str=META_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def test_tiktoken_file_gives_tiktoken_ids_and_llama3_specials(reference_tiktoken):
    tok = load_tokenizer(TEST_TIKTOKEN)
    assert detect_format(TEST_TIKTOKEN) == "tiktoken"
    assert tok.vocab_size == 2000 + 256 == reference_tiktoken.n_vocab
    for text in SAMPLES:
        expected = reference_tiktoken.encode(text, allowed_special=set(), disallowed_special=())
        assert tok.encode(text) == expected
        assert tok.encode(text, bos=True, eos=True) == [2000, *expected, 2001]
        assert tok.decode(tok.encode(text)) == text
    for name in ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|eot_id|>"):
        [special_id] = reference_tiktoken.encode(name, allowed_special="all")
        assert tok.special_tokens[name] == special_id
    assert (tok.bos_id, tok.eos_id, tok.eot_id) == (2000, 2001, 2009)
    assert tok.special_tokens["<|reserved_special_token_250|>"] == 2255
    assert len(tok.special_tokens) == 256


def test_tiktoken_splits_huge_whitespace_runs_without_losing_text():
    tok = load_tokenizer(TEST_TIKTOKEN)
    text = "a" + " " * 60_000 + "b" * 30_000
    assert tok.decode(tok.encode(text)) == text


def test_tiktoken_file_with_a_bad_line_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(TEST_TIKTOKEN.read_bytes()[:200] + b"\nnot base64 at all\n")
    with pytest.raises(ConfigError, match="base64-token rank"):
        load_tokenizer(bad)


def _train_sentencepiece(path: Path) -> None:
    import sentencepiece as spm

    lines = (BUNDLED_TOKENIZER.parents[1] / "tinyshakespeare/validation.jsonl").read_text()
    texts = [json.loads(line)["text"] for line in lines.splitlines()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=500,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",  # as Llama 2's model: text round-trips exactly
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def test_sentencepiece_model_loads_like_llama2(tmp_path):
    import sentencepiece as spm

    folder = tmp_path / "llama-2"
    folder.mkdir()
    model = folder / "tokenizer.model"
    _train_sentencepiece(model)
    ref = spm.SentencePieceProcessor(model_file=str(model))
    for path in (model, folder):  # the file, or a folder holding it (the Hub layout)
        tok = load_tokenizer(path)
        assert type(tok).__name__ == "SentencePieceTokenizer"
        assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (500, 1, 2)  # Llama 2's BOS/EOS ids
        for text in SAMPLES:
            assert tok.encode(text) == ref.encode(text)
            assert tok.encode(text, bos=True, eos=True) == [1, *ref.encode(text), 2]
        assert tok.decode(tok.encode(SAMPLES[0])) == SAMPLES[0]
    assert pickle.loads(pickle.dumps(tok)).encode(SAMPLES[0]) == ref.encode(SAMPLES[0])


def test_hf_tokenizer_json_loads_from_file_and_folder(tmp_path):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    folder = tmp_path / "hub-repo"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(BUNDLED_TOKENIZER.read_bytes())
    for path in (BUNDLED_TOKENIZER, folder, ""):
        tok = load_tokenizer(path)
        assert type(tok).__name__ == "HFTokenizer"
        assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (2048, 0, 1)
        for text in SAMPLES:
            assert tok.encode(text) == ref.encode(text, add_special_tokens=False).ids
        assert tok.decode(tok.encode(SAMPLES[3])) == SAMPLES[3]


def test_folder_prefers_meta_file_and_finds_original_subfolder(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "tokenizer.model").write_bytes(TEST_TIKTOKEN.read_bytes())
    (tmp_path / "tokenizer.json").write_bytes(BUNDLED_TOKENIZER.read_bytes())
    assert load_tokenizer(tmp_path).vocab_size == 2256


def test_tokenizers_survive_pickling_for_dataloader_workers():
    for path in (TEST_TIKTOKEN, BUNDLED_TOKENIZER):
        tok = load_tokenizer(path)
        clone = pickle.loads(pickle.dumps(tok))
        assert clone.encode(SAMPLES[0], bos=True) == tok.encode(SAMPLES[0], bos=True)
        assert tokenizer_fingerprint(clone) == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(load_tokenizer(TEST_TIKTOKEN)) != tokenizer_fingerprint(tok)


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist; set model.tokenizer_path"):
        load_tokenizer(tmp_path / "nope.model")
    with pytest.raises(ConfigError, match=r"holds none of tokenizer.model"):
        load_tokenizer(tmp_path)


def test_unrecognised_file_is_a_clear_error(tmp_path):
    junk = tmp_path / "tokenizer.model"
    junk.write_bytes(b"\x00\x01garbage that is no protobuf\xff" * 10)
    with pytest.raises(ConfigError, match="neither a Hugging Face tokenizer.json"):
        load_tokenizer(junk)


def test_vocab_mismatch_is_a_clear_error():
    tok = load_tokenizer(TEST_TIKTOKEN)
    check_vocab_size(tok, 2256, "llama3/debug")  # fits exactly
    check_vocab_size(tok, 4096, "llama3/debug")  # larger embedding is fine
    with pytest.raises(
        ConfigError, match=r"2256 tokens .* vocabulary of 2048; set model.vocab_size=2256"
    ):
        check_vocab_size(tok, 2048, "llama3/debug")


def test_trainer_refuses_a_tokenizer_larger_than_the_model(make_config):
    """The check runs in the trainer before the model is built (no training step happens)."""
    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    job = prepare_job(None, [], [("model.tokenizer_path", str(TEST_TIKTOKEN))])
    with pytest.raises(ConfigError, match=r"model llama3/debug has a vocabulary of 2048"):
        Trainer(job)
