"""Packing: documents become BOS..EOS runs cut into seq_len+1 windows, with no padding."""

from __future__ import annotations

import json

import torch

from titan.core.data.loader import build_dataloader


def _windows(loader) -> list[torch.Tensor]:
    """Each (inputs, labels) sample back as its seq_len+1 window."""
    out = []
    for inputs, labels in loader:
        assert torch.equal(inputs[:, 1:], labels[:, :-1])  # labels are inputs shifted by one
        out.extend(torch.cat([inputs, labels[:, -1:]], dim=1))
    return out


def test_windows_are_the_document_stream_cut_without_padding(
    corpus, make_config, bundled_tokenizer
):
    folder = corpus(files=1, docs=30)
    seq_len = 16
    config = make_config(
        **{
            "training.dataset_path": str(folder),
            "training.seq_len": seq_len,
            "training.local_batch_size": 1,
        }
    )
    tok = bundled_tokenizer
    windows = _windows(build_dataloader(config, tok, split="train", infinite=False))

    texts = [
        json.loads(line)["text"] for line in (folder / "part-0.jsonl").read_text().splitlines()
    ]
    stream = [t for text in texts for t in tok.encode(text, bos=True, eos=True)]
    assert all(len(w) == seq_len + 1 for w in windows)
    assert len(windows) == len(stream) // (seq_len + 1)  # only the final partial window is left
    assert torch.cat(windows).tolist() == stream[: len(windows) * (seq_len + 1)]
    # Documents are separated by EOS then BOS, and windows cut through documents freely.
    flat = torch.cat(windows).tolist()
    assert flat[0] == tok.bos_id
    boundaries = [i for i in range(1, len(flat)) if flat[i] == tok.bos_id]
    assert boundaries and all(flat[i - 1] == tok.eos_id for i in boundaries)
    assert any(w[0] != tok.bos_id for w in windows)  # some window starts mid-document


def test_a_document_longer_than_a_window_continues_in_the_next(
    tmp_path, make_config, bundled_tokenizer
):
    long_text = " ".join(f"word{i}" for i in range(200))
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": long_text}) + "\n" + json.dumps({"text": "short"}) + "\n")
    config = make_config(
        **{
            "training.dataset_path": str(path),
            "training.seq_len": 8,
            "training.local_batch_size": 2,
        }
    )
    tok = bundled_tokenizer
    flat = torch.cat(_windows(build_dataloader(config, tok, infinite=False))).tolist()
    expected = tok.encode(long_text, bos=True, eos=True) + tok.encode("short", bos=True, eos=True)
    assert len(tok.encode(long_text)) > 9 * 10  # spans more than ten windows
    assert flat == expected[: len(flat)] and len(expected) - len(flat) < 9


def test_training_stream_repeats_epochs_endlessly(corpus, make_config, bundled_tokenizer):
    folder = corpus(files=1, docs=6)
    config = make_config(
        **{
            "training.dataset_path": str(folder),
            "training.seq_len": 8,
            "training.local_batch_size": 1,
        }
    )
    once = len(_windows(build_dataloader(config, bundled_tokenizer, infinite=False)))
    endless = iter(build_dataloader(config, bundled_tokenizer))  # split="train": endless
    assert len([next(endless) for _ in range(3 * once + 2)]) == 3 * once + 2
