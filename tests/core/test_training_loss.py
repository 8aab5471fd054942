"""A short CPU run on the bundled corpus learns: the loss clearly falls, deterministically."""

from __future__ import annotations

import json
import math
from pathlib import Path

from titan.core.launch import prepare_job
from titan.core.train import run_training

SHORT = [
    ("training.steps", "30"),
    ("training.seq_len", "64"),
    ("training.local_batch_size", "4"),
    ("lr_scheduler.warmup_steps", "3"),
    ("optimizer.lr", "3e-3"),
    ("metrics.log_freq", "5"),
    ("training.mixed_precision_param", "float32"),
]


def train(tmp_path: Path, name: str, extra=()) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    job = prepare_job(None, overrides=[*SHORT, ("job.dump_folder", str(out)), *extra])
    result = run_training(job)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return result, records


def test_loss_falls_and_is_reproducible(tmp_path: Path) -> None:
    result, records = train(tmp_path, "a")
    first, last = result["first_loss"], result["last_loss"]
    assert math.log(2048) - 0.7 < first < math.log(2048) + 1.0  # starts near uniform over the vocab
    assert last < first - 1.5, (first, last)  # and clearly learns
    assert [r["step"] for r in records] == [1, 5, 10, 15, 20, 25, 30]
    _, again = train(tmp_path, "b")
    assert [r["loss"] for r in again] == [r["loss"] for r in records]  # bitwise, eager fp32 on CPU


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path: Path) -> None:
    """2 micro-batches of 2 give the same step as 1 batch of 4 (same samples, same order)."""
    base = [("training.steps", "3"), ("training.local_batch_size", "4")]
    accum = [
        ("training.steps", "3"),
        ("training.local_batch_size", "2"),
        ("training.global_batch_size", "4"),
    ]
    _, big = train(tmp_path, "big", base)
    _, small = train(tmp_path, "small", accum)
    for a, b in zip(big, small, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5)
