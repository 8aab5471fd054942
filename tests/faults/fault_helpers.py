"""Helpers for the fault tests: `titan run` as a user runs it, interrupted in every way.

Runs go through the real CLI in a subprocess (``python -m titan.core.cli run``):
the local backend, the torchrun wrapper, the per-rank entry point, DCP.

Exactness (as in tests/distributed): fp32 eager on CPU, no gradient clipping, a
constant LR after warmup, and a corpus with one training window per document, so
two ranks with ``local_batch_size=1`` compute the same steps as one process with
gradient accumulation over 2 micro-batches; that one process, run straight
through, is the reference every interrupted run is compared with bitwise.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

SEQ_LEN = 32
REFERENCE_STEPS = 12
WORDS = (
    "the and to of you my that in is not with me it for be his your this but he have as "
    "thou so him will what by thy all her do no shall if are we our on lord now good from "
    "at they come o sir more let"
)


def titan_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1", **extra)
    return env


def titan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "titan.core.cli", "run", *args]


def run_titan(
    *args: str, timeout: float = 400, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``titan run ARGS`` to its end (whatever its exit code)."""
    return subprocess.run(
        titan_cmd(*args), env=env or titan_env(), capture_output=True, text=True, timeout=timeout
    )


def read_losses(dump: Path, skip_lines: int = 0) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (dump / "metrics.jsonl").read_text().splitlines()[skip_lines:]:
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


def metrics_lines(dump: Path) -> int:
    path = dump / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_one_window_corpus(path: Path, n_docs: int = 120, seq_len: int = SEQ_LEN) -> Path:
    """Documents of exactly one training window each (BOS + seq_len - 1 words + EOS)."""
    from titan.core.tokenizers import load_tokenizer

    tok = load_tokenizer("")
    words = [w for w in WORDS.split() if len(tok.encode(" " + w)) == 1]
    rng = random.Random(1234)
    lines = []
    for _ in range(n_docs):
        text = " " + " ".join(rng.choice(words) for _ in range(seq_len - 1))
        assert len(tok.encode(text, bos=True, eos=True)) == seq_len + 1
        lines.append(json.dumps({"text": text}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_steps(proc: subprocess.Popen, dump: Path, steps: int, timeout: float = 300) -> None:
    """Until ``metrics.jsonl`` holds ``steps`` rows (the run logs every step)."""
    deadline = time.monotonic() + timeout
    while metrics_lines(dump) < steps:
        assert proc.poll() is None, proc.log.read_text()  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "training did not get that far"
        time.sleep(0.05)
