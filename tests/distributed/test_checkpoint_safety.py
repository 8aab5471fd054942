"""Checkpoint folders: atomic naming, pruning, and loading without arbitrary unpickling."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from titan.core.checkpoint import CheckpointError, CheckpointManager
from titan.core.checkpoint_states import ModelState, OptimizerState, RankLocalState
from titan.core.folders import complete_checkpoints


class Counter:
    """A stand-in for a data loader: per-rank state with a growing list."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def state_dict(self) -> dict:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.seen = list(state["seen"])


class Payload:
    """Unpickling this runs code (touches a file): what weights_only loading must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _states(seed: int) -> tuple[dict, torch.nn.Module, Counter]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    counter = Counter()
    states = {
        "model": ModelState(model),
        "optimizer": OptimizerState(model, opt),
        "lr_scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0),
        "train_state": {"step": torch.tensor(seed)},
        "dataloader": RankLocalState(counter, dp_rank=0, dp_world_size=1),
    }
    return states, model, counter


def _manager(folder: Path, states: dict, **kw) -> CheckpointManager:
    return CheckpointManager(folder, states, enabled=True, interval=1, **kw)


def test_round_trip_atomic_names_and_keep_latest(tmp_path):
    states, model, counter = _states(1)
    counter.seen = [1, 2, 3]
    mgr = _manager(tmp_path, states, keep_latest_k=2)
    for step in (1, 2, 3):
        mgr.save(step)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 3]
    assert not list(tmp_path.glob("*.tmp"))

    fresh, fresh_model, fresh_counter = _states(2)
    assert not torch.equal(fresh_model.weight, model.weight)
    assert _manager(tmp_path, fresh).load() == 3
    assert torch.equal(fresh_model.weight, model.weight)
    assert fresh_counter.seen == [1, 2, 3]
    assert int(fresh["train_state"]["step"]) == 1


def test_unfinished_save_is_ignored_and_removed(tmp_path):
    states, _, _ = _states(1)
    _manager(tmp_path, states).save(5)
    crashed = tmp_path / "step-9.tmp"
    crashed.mkdir()
    (crashed / "__0_0.distcp").write_bytes(b"half written")
    incomplete = tmp_path / "step-7"  # a folder without DCP's .metadata index
    incomplete.mkdir()
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [5]
    fresh, _, _ = _states(2)
    assert _manager(tmp_path, fresh).load() == 5
    assert not crashed.exists()


def test_missing_step_is_a_clear_error(tmp_path):
    states, _, _ = _states(1)
    _manager(tmp_path, states).save(5)
    with pytest.raises(Exception, match=r"no complete checkpoint for step 4 .*have: 5"):
        _manager(tmp_path, states).load(step=4)


def test_code_in_a_saved_value_is_never_run(tmp_path):
    """A non-tensor value whose unpickling would run code: refused, and nothing ran."""
    marker = tmp_path / "pwned"
    states, _, _ = _states(1)
    _manager(tmp_path / "ckpt", {**states, "train_state": {"evil": Payload(marker)}}).save(1)
    fresh, _, _ = _states(2)
    fresh["train_state"] = {"evil": 0}
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        _manager(tmp_path / "ckpt", fresh).load()
    assert not marker.exists()


def test_code_in_the_metadata_index_is_never_run(tmp_path):
    """DCP's .metadata is a pickle; only DCP's own metadata classes are accepted."""
    marker = tmp_path / "pwned"
    states, _, _ = _states(1)
    _manager(tmp_path / "ckpt", states).save(1)
    (tmp_path / "ckpt" / "step-1" / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match="not DCP metadata"):
        _manager(tmp_path / "ckpt", states).load()
    assert not marker.exists()


def test_missing_required_state_names_what_the_checkpoint_holds(tmp_path):
    states, _, _ = _states(1)
    _manager(tmp_path, {"model": states["model"]}).save(1)
    with pytest.raises(CheckpointError, match="has no 'optimizer' state .*holds: model"):
        _manager(tmp_path, states).load()


def test_rank_local_state_of_another_layout_is_skipped(tmp_path):
    """Saved by rank 0 of 2 data-parallel ranks, loaded by a single rank: not applied."""
    states, _, counter = _states(1)
    counter.seen = [7]
    states["dataloader"] = RankLocalState(counter, dp_rank=0, dp_world_size=2)
    _manager(tmp_path, states).save(1)
    fresh, _, fresh_counter = _states(2)
    mgr = _manager(tmp_path, fresh)
    assert mgr.load() == 1
    assert mgr.skipped_states == ["dataloader"]
    assert fresh_counter.seen == []
