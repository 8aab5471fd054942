"""Shared fixtures of the data and tokenizer tests: configs, tokenizers and small corpora."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # DataLoader workers are forked


def _doc(i: int) -> str:
    """A short document whose number can be read back after tokenization."""
    words = " ".join(f"w{(i * 7 + k) % 13}" for k in range(3 + i % 5))
    return f"doc{i} says {words}."


@pytest.fixture
def make_config() -> Callable[..., Any]:
    """``make_config(**{"training.seq_len": 16})`` -> a validated JobConfig with those overrides."""
    from titan.core.launch import prepare_job

    def make(**overrides: Any) -> Any:
        pairs = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in overrides.items()]
        return prepare_job(None, [], pairs).config

    return make


@pytest.fixture(scope="session")
def bundled_tokenizer() -> Any:
    from titan.core.tokenizers import load_tokenizer

    return load_tokenizer("")


@pytest.fixture
def corpus(tmp_path: Path) -> Callable[..., Path]:
    """``corpus(files=2, docs=40)`` -> a folder of JSON-lines files of numbered documents."""

    def make(files: int = 2, docs: int = 40, name: str = "corpus", column: str = "text") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in range(files):
            with (folder / f"part-{f}.jsonl").open("w") as out:
                for i in range(f, docs, files):
                    out.write(json.dumps({column: _doc(i), "id": i}) + "\n")
        return folder

    return make


@pytest.fixture
def doc_text() -> Callable[[int], str]:
    return _doc


def pytest_configure(config: pytest.Config) -> None:
    # torchdata 0.11 calls a torch API that torch 2.15 deprecates; nothing a test can act on.
    config.addinivalue_line("filterwarnings", "ignore:.*set_vital.*:UserWarning")
