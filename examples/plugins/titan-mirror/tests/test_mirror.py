"""The example optimizer and checkpoint-mirror plugins, tested with titan's ``titan_runner``.

The mirror's copy must be a whole checkpoint: a fresh folder holding only the copy resumes
from it and trains exactly the steps the uninterrupted run trained (float32, so every step
is bit-for-bit repeatable on a CPU).
"""

from __future__ import annotations

import filecmp
import shutil

from titan.core.testing import TitanRunner

EXACT = ("--training.mixed_precision_param=float32",)
SGD = ("--plugins=sgd,mirror", "--optimizer.name=SGD", "--optimizer.lr=0.05")
CHECKPOINTS = ("--checkpoint.enable_checkpoint=true", "--checkpoint.interval=2")


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    match, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_sgd_trains_and_its_state_is_checkpointed(titan_runner: TitanRunner) -> None:
    mirror = titan_runner.path / "mirror"
    result = titan_runner.run(*SGD, *CHECKPOINTS, f"--mirror.folder={mirror}").assert_ok()
    losses = result.metric("loss")
    assert losses[4] < losses[1]
    state = result.checkpoint_state(4, "optimizer")
    buffers = [key for key in state if key.endswith("momentum_buffer")]
    assert buffers, sorted(state)[:5]  # SGD's state, not AdamW's exp_avg / exp_avg_sq
    assert not any(key.endswith("exp_avg") for key in state)


def test_resume_from_the_mirrored_copy(titan_runner: TitanRunner) -> None:
    mirror = titan_runner.path / "mirror"
    full = titan_runner.run(*EXACT, *SGD, *CHECKPOINTS, f"--mirror.folder={mirror}").assert_ok()
    assert sorted(p.name for p in mirror.iterdir()) == ["step-2", "step-4"]
    for step, path in full.checkpoints.items():
        assert same_tree(path, mirror / f"step-{step}")

    fresh = titan_runner.path / "from-the-copy"
    shutil.copytree(mirror / "step-2", fresh / "checkpoint" / "step-2")
    again = titan_runner.run(
        *EXACT, *SGD, *CHECKPOINTS, f"--mirror.folder={mirror}-2", dump_folder=fresh
    ).assert_ok()
    assert "resumed from checkpoint" in again.stderr and "step 2" in again.stderr
    resumed = again.metric("loss")
    assert set(resumed) == {3, 4}
    assert resumed == {s: full.metric("loss")[s] for s in (3, 4)}


def test_an_optimizer_no_plugin_builds_is_one_line(titan_runner: TitanRunner) -> None:
    result = titan_runner.run("--optimizer.name=Lion")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no active plugin builds optimizer 'Lion' (built in: AdamW, Adam); set "
        "--optimizer.name=AdamW, or install and enable (--plugins) the plugin that provides it"
    ]
