"""FSDP2 over 2 ranks trains exactly like one process with the same global batch."""

from __future__ import annotations

import math

from titan.core.checkpoint import read_metadata


def test_two_rank_fsdp_losses_match_one_process(reference, fsdp_two_ranks):
    """`titan run --backend local --nproc 2` (torchrun, gloo, FSDP2) vs 1 process.

    Same global batch (2 ranks x 1 sequence vs 1 process x 2 micro-batches of 1),
    same samples in the same order, same initial weights (rank 0 initialises the
    full model and scatters it). The arithmetic differs only where floating point
    is exact (a mean of two halves), so the losses agree to the last bit here;
    the assertion allows rounding-level differences, as other hardware may reorder sums.
    """
    steps = sorted(fsdp_two_ranks.losses)
    assert steps == list(range(1, 11))
    for step in steps:
        one, two = reference.losses[step], fsdp_two_ranks.losses[step]
        assert math.isclose(one, two, rel_tol=1e-6, abs_tol=0.0), (step, one, two)
    assert fsdp_two_ranks.losses[10] < fsdp_two_ranks.losses[1] - 0.3  # it learns


def test_only_rank_zero_logs(fsdp_two_ranks):
    """Each step is logged once (rank 0), with the loss averaged over the ranks."""
    records = (fsdp_two_ranks.dump / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 10
    assert fsdp_two_ranks.stderr.count("step     3/10") == 1


def test_checkpoint_holds_parameters_sharded_by_both_ranks(fsdp_two_ranks):
    """Each rank wrote its own dim-0 shard of every weight (DTensor, FSDP2)."""
    ckpt = fsdp_two_ranks.dump / "checkpoint" / "step-10"
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    meta = read_metadata(ckpt).state_dict_metadata["model.layers.0.attention.wq.weight"]
    rows = sorted(chunk.offsets[0] for chunk in meta.chunks)
    assert rows == [0, meta.size[0] // 2]


def test_hsdp_replicated_ranks_match_one_process(reference, run_exact):
    """HSDP: data_parallel_replicate_degree=2 (2-D mesh, replicate x shard) trains the same."""
    hsdp = run_exact(
        "hsdp",
        "--nproc=2",
        "--training.steps=4",
        "--parallelism.data_parallel_replicate_degree=2",
    ).ok()
    for step in range(1, 5):
        assert math.isclose(reference.losses[step], hsdp.losses[step], rel_tol=1e-6), step
