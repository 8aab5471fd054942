"""Validation loss every eval_interval steps, without changing what training does."""

from __future__ import annotations

import json
import math

import pytest
import torch

from titan.core.builtin.validation import Evaluator
from titan.core.errors import ConfigError
from titan.core.launch import prepare_job
from titan.core.trainer import Trainer

SMALL = {
    "training.steps": 4,
    "training.seq_len": 32,
    "training.local_batch_size": 2,
    "training.mixed_precision_param": "float32",
    "metrics.log_freq": 1,
}


def _trainer(tmp_path, name: str, **overrides) -> Trainer:
    pairs = {**SMALL, "job.dump_folder": str(tmp_path / name), **overrides}
    job = prepare_job(
        None, [], [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in pairs.items()]
    )
    return Trainer(job)


def _metrics(trainer: Trainer) -> list[dict]:
    lines = (trainer.dump_folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two 4-step runs, with validation every 2 steps and without; fp32, same seed."""
    tmp = tmp_path_factory.mktemp("validation")
    with_val = _trainer(
        tmp,
        "with",
        **{"validation.enable": True, "validation.eval_interval": 2, "validation.steps": 2},
    )
    with_val.train()
    without = _trainer(tmp, "without")
    without.train()
    return with_val, without


def test_val_loss_is_logged_every_eval_interval_steps(trained):
    records = {r["step"]: r for r in _metrics(trained[0])}
    assert sorted(records) == [1, 2, 3, 4]
    assert [s for s, r in records.items() if "val_loss" in r] == [2, 4]
    for step in (2, 4):
        assert 0 < records[step]["val_loss"] < math.log(2048) + 1
    assert records[4]["val_loss"] < records[2]["val_loss"]  # it learns, so validation improves


def test_validation_does_not_change_training(trained):
    with_val, without = (_metrics(t) for t in trained)
    assert [r["loss"] for r in with_val] == [r["loss"] for r in without]  # bitwise, in fp32
    assert "val_loss" not in without[-1]


def test_evaluation_leaves_rng_data_and_model_untouched(trained):
    trainer = trained[0]
    rng = torch.get_rng_state()
    data_state = repr(trainer.dataloader.state_dict())
    params = [p.detach().clone() for p in trainer.model.parameters()]
    first = Evaluator(trainer).evaluate()
    assert first == Evaluator(trainer).evaluate()  # the same batches every time
    assert torch.equal(torch.get_rng_state(), rng)
    assert repr(trainer.dataloader.state_dict()) == data_state
    assert all(torch.equal(p, q) for p, q in zip(params, trainer.model.parameters(), strict=True))
    assert trainer.model.training and all(p.grad is None for p in trainer.model.parameters())


def test_whole_split_evaluation_is_the_mean_batch_loss(trained, tmp_path):
    trainer = trained[0]
    held_out = tmp_path / "heldout.jsonl"
    held_out.write_text(
        "".join(json.dumps({"text": f"Line {i} of held out text."}) + "\n" for i in range(12))
    )
    v = trainer.config.validation
    v.dataset_path, v.steps = str(held_out), -1
    try:
        evaluator = Evaluator(trainer)
        losses = []
        with torch.no_grad():
            for inputs, labels in evaluator.loader:
                losses.append(float(trainer.cross_entropy(trainer.model(inputs), labels)))
        assert len(losses) >= 2
        assert evaluator.evaluate() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    finally:
        v.dataset_path, v.steps = "", 2


def test_torchtitan_freq_key_and_bad_values(make_config):
    assert make_config(**{"validation.freq": 7}).validation.eval_interval == 7
    with pytest.raises(ConfigError, match=r"validation.eval_interval must be positive"):
        make_config(**{"validation.eval_interval": 0})
    with pytest.raises(ConfigError, match=r"validation.steps must be positive, or -1"):
        make_config(**{"validation.steps": 0})


def test_missing_validation_split_fails_before_the_first_step(tmp_path, corpus):
    trainer = _trainer(
        tmp_path,
        "nosplit",
        **{"training.dataset_path": str(corpus(files=1, docs=20)), "validation.enable": True},
    )
    with pytest.raises(ConfigError, match=r"no files for the 'validation' split"):
        trainer.train()
    assert not (trainer.dump_folder / "metrics.jsonl").exists()
