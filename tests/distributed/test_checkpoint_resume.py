"""Stop and resume gives bitwise the losses of an uninterrupted run, also across rank counts."""

from __future__ import annotations

import shutil

from titan.core.folders import complete_checkpoints


def _same_bits(resumed: dict[int, float], reference: dict[int, float], steps: range) -> None:
    assert sorted(resumed) == list(steps), sorted(resumed)
    for step in steps:
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


def test_stop_at_10_and_resume_to_20_is_bitwise_identical(reference, run_exact):
    """Same world size: 10 steps (async saves at 4 and 8, the last one synchronous), then 20."""
    first = run_exact(
        "resume",
        "--training.steps=10",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=4",
        "--checkpoint.async_mode=async",
    ).ok()
    folder = first.dump / "checkpoint"
    assert [s for s, _ in complete_checkpoints(folder)] == [4, 8, 10]
    assert not list(folder.glob("*.tmp"))
    _same_bits(first.losses, reference.losses, range(1, 11))

    resumed = run_exact(
        "resume", "--training.steps=20", "--checkpoint.enable_checkpoint=true", dump=first.dump
    ).ok()
    assert f"resumed from checkpoint {folder / 'step-10'} (step 10)" in resumed.stderr
    _same_bits(resumed.losses, reference.losses, range(11, 21))

    # The async-written step-8 checkpoint is exact too.
    from_async = run_exact(
        "resume",
        "--training.steps=12",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.load_step=8",
        dump=first.dump,
    ).ok()
    _same_bits(from_async.losses, reference.losses, range(9, 13))


def test_two_rank_checkpoint_resumes_on_one_rank_bitwise(
    reference, fsdp_two_ranks, run_exact, tmp_path
):
    """Saved by 2 FSDP ranks at step 10, loaded by 1 process: steps 11-20 are the reference's.

    The sharded weights and optimizer moments are resharded by DCP; the data
    loader positions belong to the old ranks' shards, so the single process skips
    the 20 sequences consumed so far and continues with the 21st.
    """
    dump = tmp_path / "reshard"  # a copy: the 2-rank run's folder is shared with other tests
    shutil.copytree(fsdp_two_ranks.dump / "checkpoint" / "step-10", dump / "checkpoint" / "step-10")
    resumed = run_exact(
        "reshard", "--training.steps=20", "--checkpoint.enable_checkpoint=true", dump=dump
    ).ok()
    assert "resumed from checkpoint" in resumed.stderr
    assert "skips 20 batches" in resumed.stderr
    _same_bits(resumed.losses, reference.losses, range(11, 21))
