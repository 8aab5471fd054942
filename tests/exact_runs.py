"""`titan run` as a user runs it, set up so that runs can be compared bit for bit.

Shared by the distributed, fault and Slurm tests (each folder puts ``tests/`` on
``sys.path`` to import it; the suite runs with ``--import-mode=importlib``).

Exactness: fp32 eager on CPU (bitwise reproducible), no gradient clipping (a
sharded gradient norm is summed in another order, which would change the clipped
gradients in the last bit), a constant LR after warmup (so a run stopped early and
one that goes on share their schedule), and a corpus with one training window per
document (:func:`write_one_window_corpus`): two ranks with ``local_batch_size=1``
then see per step exactly the two micro-batches that one process sees with
gradient accumulation over a global batch of 2.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

SEQ_LEN = 32
WORDS = (
    "the and to of you my that in is not with me it for be his your this but he have as "
    "thou so him will what by thy all her do no shall if are we our on lord now good from "
    "at they come o sir more let"
)


def titan_env(**extra: str) -> dict[str, str]:
    """The environment of a test run: one thread per rank, no OpenMP spinning (2 shared cores)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1", **extra)
    return env


def titan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "titan.core.cli", "run", *args]


def run_titan(
    *args: str, timeout: float = 400, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``titan run ARGS`` to its end, whatever its exit code."""
    return subprocess.run(
        titan_cmd(*args), env=env or titan_env(), capture_output=True, text=True, timeout=timeout
    )


def metrics_lines(dump: Path) -> int:
    """How many records the run's metrics.jsonl holds (0 when there is none)."""
    path = dump / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def read_losses(dump_folder: Path, skip_lines: int = 0) -> dict[int, float]:
    """step -> loss from the run's metrics.jsonl, ignoring its first ``skip_lines`` records."""
    out: dict[int, float] = {}
    for line in (dump_folder / "metrics.jsonl").read_text().splitlines()[skip_lines:]:
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]
    return out


def write_one_window_corpus(path: Path, n_docs: int = 200, seq_len: int = SEQ_LEN) -> Path:
    """A JSON-lines corpus whose every document tokenizes to exactly one training window.

    Each document is BOS + ``seq_len - 1`` single-token words + EOS = ``seq_len + 1``
    tokens, so packing never joins documents and sample i is document i. Data-parallel
    ranks take documents round-robin, so with ``local_batch_size=1`` two ranks see
    documents (0, 1), (2, 3)... per step, as one process does with 2 micro-batches.
    """
    from titan.core.tokenizers import load_tokenizer

    tok = load_tokenizer("")
    words = [w for w in WORDS.split() if len(tok.encode(" " + w)) == 1]
    assert len(words) >= 20, f"too few single-token words in the bundled tokenizer: {words}"
    rng = random.Random(1234)
    lines = []
    for _ in range(n_docs):
        text = " " + " ".join(rng.choice(words) for _ in range(seq_len - 1))
        assert len(tok.encode(text, bos=True, eos=True)) == seq_len + 1
        lines.append(json.dumps({"text": text}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def exact_args(corpus: Path) -> list[str]:
    """Overrides shared by every run that is compared bitwise with another."""
    return [
        "--model.flavor=debug",
        f"--training.seq_len={SEQ_LEN}",
        "--training.local_batch_size=1",
        f"--training.dataset_path={corpus}",
        "--training.mixed_precision_param=float32",
        "--training.max_norm=0",
        "--lr_scheduler.warmup_steps=2",
        "--lr_scheduler.decay_type=none",
        "--metrics.log_freq=1",
    ]
