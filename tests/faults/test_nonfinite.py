"""NaN gradients: never applied; `stop` ends the run naming the step, `skip` drops the step.

The NaN comes from a tiny third-party plugin installed for the test (a real
distribution with a `titan.plugins` entry point on PYTHONPATH, activated with
--plugins): at the configured step its `titan_after_backward` hook fills one
gradient with NaN, as a real overflow would. Nothing in titan knows about it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from exact_runs import titan_env
from fault_helpers import REFERENCE_STEPS

from titan.core.folders import complete_checkpoints
from titan.core.testing import install_plugin

PLUGIN = '''
"""nan-inject: fills one gradient with NaN at [nan_inject] step (a test plugin)."""

from dataclasses import dataclass

from titan.core import hookimpl


@dataclass
class NanInjectSection:
    step: int = 0


@hookimpl
def titan_config_sections():
    return {"nan_inject": NanInjectSection}


@hookimpl
def titan_after_backward(trainer, step):
    if step == trainer.config.nan_inject.step:
        next(trainer.model.parameters()).grad.fill_(float("nan"))
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "nan-inject", PLUGIN)
    return titan_env(PYTHONPATH=str(site))


def _tensors(checkpoint: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / f"{checkpoint.name}.pt"
    dcp_to_torch_save(str(checkpoint), str(out))
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, torch.Tensor):
            flat[prefix] = value

    state = torch.load(out, weights_only=False)
    walk("model", state["model"])
    walk("optimizer", state["optimizer"])
    return flat


def test_nan_stops_before_the_update_and_resume_is_exact(reference, run_exact, plugin_env):
    ckpt = ["--checkpoint.enable_checkpoint=true", "--checkpoint.interval=4"]
    steps = f"--training.steps={REFERENCE_STEPS}"
    bad = run_exact(
        "nan-stop",
        steps,
        *ckpt,
        "--metrics.log_freq=3",  # the flag is read at log/save steps: NaN at 5, seen at 6
        "--plugins=nan-inject",
        "--nan_inject.step=5",
        env=plugin_env,
    )
    err = bad.proc.stderr
    assert bad.proc.returncode == 1, err
    assert "non-finite (NaN/inf) gradients at step 5 (seen at step 6" in err
    assert len([line for line in err.splitlines() if "non-finite" in line]) == 1
    assert "Traceback" not in err
    folder = bad.dump / "checkpoint"
    assert [s for s, _ in complete_checkpoints(folder)] == [4]  # the last good one, intact
    assert not list(folder.glob("*.tmp"))
    assert all(math.isfinite(v) for s, v in bad.losses.items() if s < 5)

    resumed = run_exact("nan-stop", steps, *ckpt, dump=bad.dump)  # cause removed: resume
    assert resumed.proc.returncode == 0, resumed.proc.stderr
    assert f"resumed from checkpoint {folder / 'step-4'} (step 4)" in resumed.proc.stderr
    assert sorted(resumed.losses) == list(range(5, REFERENCE_STEPS + 1))
    for s, loss in resumed.losses.items():
        assert loss == reference.losses[s], s


def test_nan_skip_drops_exactly_that_step(reference, run_exact, plugin_env, tmp_path):
    run = run_exact(
        "nan-skip",
        "--training.steps=5",
        "--checkpoint.enable_checkpoint=true",
        "--checkpoint.interval=1",
        "--training.nonfinite=skip",
        "--plugins=nan-inject",
        "--nan_inject.step=3",
        env=plugin_env,
    )
    err = run.proc.stderr
    assert run.proc.returncode == 0, err
    found = re.findall(r"skipped (\d+) optimizer step\(s\) with non-finite gradients", err)
    assert found == ["1"], err  # reported once
    assert "the first at step 3" in err
    for s in (1, 2, 3):
        assert run.losses[s] == reference.losses[s]
    assert all(math.isfinite(v) for v in run.losses.values())
    # Step 3's update was not applied: weights, moments and step count are those of step 2.
    folder = run.dump / "checkpoint"
    before, after = _tensors(folder / "step-2", tmp_path), _tensors(folder / "step-3", tmp_path)
    assert before.keys() == after.keys() and before
    for key in before:
        assert torch.equal(before[key], after[key]), key
    last = _tensors(folder / "step-5", tmp_path)
    assert all(torch.isfinite(t).all() for t in last.values())
    assert not torch.equal(
        last["model.tok_embeddings.weight"], after["model.tok_embeddings.weight"]
    )
