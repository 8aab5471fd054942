"""Helpers for the distributed tests: running `titan` as a user would, and a parity corpus.

Every run goes through the real CLI in a subprocess (``python -m titan.core.cli``),
so the local backend, torchrun and the per-rank entry point are all exercised.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny and exact: the debug model, fp32 (bitwise-reproducible eager math on CPU),
# no gradient clipping (its norm is summed in a different order when sharded,
# which would change the clipped gradients in the last bit).
TINY = [
    "--model.flavor=debug",
    "--training.seq_len=32",
    "--training.mixed_precision_param=float32",
    "--training.max_norm=0",
    "--lr_scheduler.warmup_steps=2",
    "--metrics.log_freq=1",
]

SEQ_LEN = 32


def titan_env() -> dict[str, str]:
    env = dict(os.environ)
    # One thread per rank and no spinning: the machine has 2 cores shared by all ranks.
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def titan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "titan.core.cli", "run", *args]


def run_titan(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``titan run ARGS`` to completion; fail the test with its output if it fails."""
    proc = subprocess.run(
        titan_cmd(*args), env=titan_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"titan run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(dump_folder: Path) -> dict[int, float]:
    """step -> loss from the run's metrics.jsonl (the last record per step wins)."""
    out: dict[int, float] = {}
    for line in (dump_folder / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


def write_one_window_corpus(path: Path, n_docs: int = 400, seq_len: int = SEQ_LEN) -> Path:
    """A JSON-lines corpus whose every document tokenizes to exactly one training window.

    Each document is BOS + ``seq_len - 1`` single-token words + EOS = ``seq_len + 1``
    tokens, so packing never mixes documents and sample i is document i. Data-parallel
    ranks take documents round-robin, so with ``local_batch_size=1`` two ranks see
    documents (0, 1), (2, 3)... per step: exactly the two micro-batches one process sees
    with gradient accumulation over the same global batch of 2.
    """
    from titan.core.tokenizers import load_tokenizer

    tok = load_tokenizer("")
    vocab = [w for w in ("the and to of you my that in is not with me it for be his your this but "
                         "he have as thou so him will what by thy all her do no shall if are we "
                         "our on lord now good from at they come o sir more let").split()]
    words = [w for w in vocab if len(tok.encode(" " + w)) == 1]
    assert len(words) >= 20, f"too few single-token words: {words}"
    rng = random.Random(1234)
    lines = []
    for _ in range(n_docs):
        text = " " + " ".join(rng.choice(words) for _ in range(seq_len - 1))
        assert len(tok.encode(text, bos=True, eos=True)) == seq_len + 1
        lines.append(json.dumps({"text": text}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def one_window_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_one_window_corpus(tmp_path_factory.mktemp("corpus") / "train.jsonl")
