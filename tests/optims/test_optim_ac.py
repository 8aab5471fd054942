"""ac: blocks are really wrapped, really recompute in backward, and the memory saved is right."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.core.errors import ConfigError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402

MODES = {
    "full": [("ac.mode", "full")],
    "every2": [("ac.mode", "selective"), ("ac.selective_ac_option", "2")],
    "op": [("ac.mode", "selective"), ("ac.selective_ac_option", "op")],
}


def trainer_for(tmp_path: Path, mode: str | None):
    if mode is None:
        return h.build_trainer(tmp_path / "none", [])
    return h.build_trainer(tmp_path / mode, ["ac"], MODES[mode])


def forward_backward_ops(trainer) -> tuple[Counter[str], Counter[str]]:  # noqa: ANN001
    """Op counts of the forward, and of the backward (which includes any recomputation)."""
    torch.manual_seed(0)
    tokens = torch.randint(0, 2048, (2, 64))
    fwd, bwd = h.OpCount(), h.OpCount()
    with fwd:
        loss = trainer.cross_entropy(trainer.model(tokens), tokens)
    with bwd:
        loss.backward()
    return fwd.counts, bwd.counts


def activations_held_mib(trainer) -> float:  # noqa: ANN001
    """Real memory (CPU) the model's forward leaves alive for backward."""
    tracker = MemTracker()
    tracker.track_external(trainer.model)
    tokens = torch.randint(0, 2048, (2, 64))
    with tracker:
        out = trainer.model(tokens)
        snapshot = tracker.get_tracker_snapshot("current")
        del out
    return sum(v for d in snapshot.values() for k, v in d.items() if "ACT" in str(k)) / 2**20


@pytest.mark.parametrize(
    ("mode", "wrapped"),
    [("full", [0, 1, 2, 3, 4, 5]), ("every2", [1, 3, 5]), ("op", [0, 1, 2, 3, 4, 5])],
)
def test_the_chosen_blocks_are_wrapped(tmp_path: Path, mode: str, wrapped: list[int]) -> None:
    layers = trainer_for(tmp_path, mode).model.layers
    for i, block in enumerate(layers.values()):
        assert isinstance(block, CheckpointWrapper) == (i in wrapped), (mode, i)
        if isinstance(block, CheckpointWrapper):
            assert type(block._checkpoint_wrapped_module).__name__ == "TransformerBlock"
            per_op = "context_fn" in block.checkpoint_fn.keywords
            assert per_op == (mode == "op")


def test_recomputation_happens_in_backward_as_configured(tmp_path: Path) -> None:
    """full recomputes the matmuls; per-op recomputes every second matmul and SiLU."""
    fwd, plain = forward_backward_ops(trainer_for(tmp_path, None))
    _, full = forward_backward_ops(trainer_for(tmp_path, "full"))
    _, every2 = forward_backward_ops(trainer_for(tmp_path, "every2"))
    _, op = forward_backward_ops(trainer_for(tmp_path, "op"))
    block_mm = (fwd["aten.mm"] - 1) // 6  # forward matmuls per block (the output layer is 1)
    attention = "aten._scaled_dot_product_flash_attention_for_cpu"
    assert fwd["aten.silu"] == 6 and plain["aten.silu"] == 0
    # full: each block's forward runs again inside backward, up to the last op whose
    # output backward needs (torch stops early: the final w2 matmul is not redone)
    recomputed = block_mm - 1
    assert full["aten.mm"] == plain["aten.mm"] + 6 * recomputed
    assert full["aten.silu"] == 6 and full[attention] == plain[attention] + 6
    # every 2nd block: half of that
    assert every2["aten.mm"] == plain["aten.mm"] + 3 * recomputed and every2["aten.silu"] == 3
    # per op (torchtitan's policy): of a block's 7 matmuls the 2nd, 4th and 6th (wk, wo,
    # w3) are redone, the others come from the cache; element-wise work is redone, and
    # so is the CPU attention kernel (not in torchtitan's list: its list names CUDA's)
    assert block_mm == 7
    assert op["aten.mm"] == plain["aten.mm"] + 6 * 3
    assert op[attention] == plain[attention] + 6
    assert op["aten.silu"] == 6


def test_checkpointing_does_not_change_the_gradients(tmp_path: Path) -> None:
    def grads(trainer) -> list[torch.Tensor]:  # noqa: ANN001
        forward_backward_ops(trainer)
        return [p.grad.clone() for p in trainer.model.parameters()]

    reference = grads(trainer_for(tmp_path, None))
    for mode in MODES:
        for a, b in zip(grads(trainer_for(tmp_path, mode)), reference, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reported_saving_matches_a_real_measurement(tmp_path: Path) -> None:
    """The build-time estimate (fake tensors) equals what the real CPU model holds, to 2%."""
    baseline = activations_held_mib(trainer_for(tmp_path, None))
    reported = {}
    for mode in MODES:
        trainer = trainer_for(tmp_path, mode)
        report = trainer.model._titan_ac_report
        real = baseline - activations_held_mib(trainer)
        assert report["ac_saved_mib"] == pytest.approx(real, rel=0.02), (mode, report, real)
        reported[mode] = report["ac_saved_mib"]
    assert reported["full"] > reported["every2"] > 0 and reported["full"] > reported["op"] > 0


def test_saving_is_printed_and_logged_with_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from titan.optims import _common

    _common._said.clear()
    trainer = h.build_trainer(tmp_path, ["ac"], [*MODES["full"], ("training.steps", "2")])
    trainer.train()
    assert "ac: full: 6 of 6 blocks checkpointed" in capsys.readouterr().err
    records = h.read_metrics(tmp_path)
    assert records[0]["step"] == 1 and records[0]["ac_saved_mib"] > 0
    assert "ac_saved_mib" not in records[1]


def test_validation_and_torchtitan_keys() -> None:
    with pytest.raises(ConfigError, match="ac.mode is 'none'"):
        prepare_job(None, plugins=["ac"], overrides=[("ac.mode", "none")])
    with pytest.raises(ConfigError, match="'op' or a positive whole number"):
        prepare_job(None, plugins=["ac"], overrides=[("ac.selective_ac_option", "0")])
    job = prepare_job(
        None,
        overrides=[
            ("activation_checkpoint.mode", "selective"),
            ("activation_checkpoint.selective_ac_option", "2"),
        ],
    )
    assert "ac" in job.plugins.active
    assert (job.config.ac.mode, job.config.ac.selective_ac_option) == ("selective", "2")
    off = prepare_job(None, overrides=[("activation_checkpoint.mode", "none")])
    assert "ac" not in off.plugins.active
