"""`titan data prepare`: tokens on disk that training reads back without tokenizing, exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from titan.core.data.loader import build_dataloader
from titan.core.data.tokens import read_index, write_token_split
from titan.core.errors import ConfigError
from titan.core.tokenizers import load_tokenizer
from titan.core.tokenizers.base import TEST_TIKTOKEN


def _rows(loader) -> list[list[int]]:
    return [row for x, y in loader for row in torch.cat([x, y[:, -1:]], dim=1).tolist()]


def _cfg(make_config, path, **extra):
    return make_config(
        **{
            "training.dataset_path": str(path),
            "training.seq_len": 16,
            "training.local_batch_size": 2,
            **extra,
        }
    )


def test_prepared_tokens_give_the_same_windows_as_tokenizing_on_the_fly(
    tmp_path, corpus, make_config, bundled_tokenizer, doc_text
):
    folder = corpus(files=1, docs=40)
    out = tmp_path / "tokens"
    texts = [
        json.loads(line)["text"] for line in (folder / "part-0.jsonl").read_text().splitlines()
    ]
    summary = write_token_split(texts, bundled_tokenizer, out, "train", shard_tokens=100)
    assert len(summary.shards) > 3  # windows cross shard files
    index = read_index(out)
    assert index["dtype"] == "uint16" and index["splits"]["train"]["documents"] == 40
    assert np.load(out / "train-00000.npy").dtype == np.uint16

    on_the_fly = _rows(
        build_dataloader(_cfg(make_config, folder), bundled_tokenizer, infinite=False)
    )
    from_disk = _rows(build_dataloader(_cfg(make_config, out), bundled_tokenizer, infinite=False))
    assert from_disk == on_the_fly and len(from_disk) > 10


@pytest.mark.parametrize("num_workers", [0, 2])
def test_prepared_tokens_resume_exactly(
    tmp_path, make_config, bundled_tokenizer, doc_text, num_workers
):
    out = tmp_path / "tokens"
    write_token_split((doc_text(i) for i in range(60)), bundled_tokenizer, out, "train")
    config = _cfg(make_config, out, **{"data.num_workers": num_workers})
    reference = iter(build_dataloader(config, bundled_tokenizer))
    expected = [next(reference)[0] for _ in range(30)]  # more than one epoch
    loader = build_dataloader(config, bundled_tokenizer)
    it = iter(loader)
    for _ in range(11):
        next(it)
    state = loader.state_dict()
    del it, loader
    resumed = build_dataloader(config, bundled_tokenizer)
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert all(torch.equal(next(again)[0], want) for want in expected[11:])


def test_tokens_from_another_tokenizer_are_refused(tmp_path, make_config, bundled_tokenizer):
    out = tmp_path / "tokens"
    write_token_split(["some text"] * 50, bundled_tokenizer, out, "train")
    other = load_tokenizer(TEST_TIKTOKEN)
    with pytest.raises(
        ConfigError, match=r"made with another tokenizer .* set model.tokenizer_path"
    ):
        build_dataloader(_cfg(make_config, out), other)
    with pytest.raises(
        ConfigError, match=r"no pre-tokenized 'validation' split .* --split validation"
    ):
        build_dataloader(_cfg(make_config, out), bundled_tokenizer, split="validation")


def test_cli_prepares_every_split_and_training_reads_it(
    tmp_path, titan_runner, make_config, bundled_tokenizer
):
    out = tmp_path / "tokens"
    done = titan_runner.titan("data", "prepare", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "train: 274 documents" in done.stderr and "validation: 14 documents" in done.stderr
    assert f"titan run --training.dataset_path={out}" in done.stderr
    index = read_index(out)
    assert set(index["splits"]) == {"train", "validation"}
    assert index["tokenizer"]["vocab_size"] == 2048
    inputs, _ = next(iter(build_dataloader(_cfg(make_config, out), bundled_tokenizer)))
    from titan.core.data.sources import BUNDLED

    with open(f"{BUNDLED['tinyshakespeare']}/train.jsonl") as f:
        first_doc = json.loads(f.readline())["text"]
    assert inputs[0].tolist() == bundled_tokenizer.encode(first_doc, bos=True)[:16]


def test_cli_errors_are_one_line(tmp_path, titan_runner):
    done = titan_runner.titan(
        "data",
        "prepare",
        "-o",
        str(tmp_path / "t"),
        f"--training.dataset_path={tmp_path}/nope.jsonl",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "not found: no such file or folder" in done.stderr
