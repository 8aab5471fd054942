"""A plugin's checkpointed state (an EMA of the weights) resumes bitwise, as documented.

``titan_checkpoint_state`` runs after the resume, so state built from the model starts
from the resumed weights; the checkpoint's copy, if any, then overwrites it. Runs are
fp32 eager on CPU with a constant LR after warmup and no clipping: bitwise reproducible.
"""

from __future__ import annotations

import shutil

import torch

from titan.core.checkpoint import read_state
from titan.core.testing import TitanRunner

EMA_PLUGIN = '''
"""ema: an exponential moving average of the weights, saved with every checkpoint."""
from dataclasses import dataclass

from titan.core import hookimpl


@dataclass
class EmaConfig:
    decay: float = 0.9


class Ema:
    def __init__(self, model, decay):
        self.model, self.decay = model, decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    def update(self):
        import torch

        with torch.no_grad():
            for n, p in self.model.named_parameters():
                self.shadow[n].lerp_(p.detach(), 1 - self.decay)

    def state_dict(self):
        return {"shadow": self.shadow}

    def load_state_dict(self, state):
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)


_state = {}


@hookimpl
def titan_config_sections():
    return {"ema": EmaConfig}


@hookimpl
def titan_checkpoint_state(trainer):
    _state["ema"] = Ema(trainer.model, trainer.config.ema.decay)
    return {"ema": _state["ema"]}


@hookimpl
def titan_train_start(trainer):
    import torch

    from titan.core.hookspecs import TRAINER_API

    missing = [name for name in TRAINER_API if not hasattr(trainer, name.split("(")[0])]
    assert not missing, f"documented trainer API missing: {missing}"

    torch.save(dict(_state["ema"].shadow), trainer.dump_folder / f"ema-start-{trainer.step}.pt")


@hookimpl
def titan_after_optimizer_step(trainer, step):
    _state["ema"].update()


@hookimpl
def titan_train_end(trainer):
    import torch

    torch.save(dict(_state["ema"].shadow), trainer.dump_folder / f"ema-{trainer.step}.pt")
'''

EXACT = (
    "--training.mixed_precision_param=float32",
    "--training.max_norm=0",
    "--lr_scheduler.warmup_steps=1",
    "--lr_scheduler.decay_type=none",
    "--checkpoint.enable_checkpoint=true",
    "--checkpoint.interval=100",
)


def _runner(tmp_path) -> TitanRunner:
    runner = TitanRunner(tmp_path)
    runner.add_plugin("ema", EMA_PLUGIN)
    return runner


def _assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resumed_plugin_state_equals_an_uninterrupted_run(tmp_path) -> None:
    runner = _runner(tmp_path)
    straight = runner.run(*EXACT, "--plugins=ema", "--training.steps=4").assert_ok()
    half = runner.run(*EXACT, "--plugins=ema", "--training.steps=2").assert_ok()
    resumed = runner.run(
        *EXACT, "--plugins=ema", "--training.steps=4", dump_folder=half.dump_folder
    ).assert_ok()
    assert "resumed from checkpoint" in resumed.stderr
    assert "no state for ema" not in resumed.stderr
    final = torch.load(straight.dump_folder / "ema-4.pt")
    _assert_bitwise(final, torch.load(resumed.dump_folder / "ema-4.pt"))
    _assert_bitwise(straight.checkpoint_state(4, "ema"), resumed.checkpoint_state(4, "ema"))
    # The saved state is the plugin's live object at save time, not a copy from the start.
    assert not torch.equal(
        final["output.weight"], torch.load(straight.dump_folder / "ema-start-0.pt")["output.weight"]
    )


def test_plugin_added_to_a_resumed_run_starts_from_the_resumed_weights(tmp_path) -> None:
    runner = _runner(tmp_path)
    first = runner.run(*EXACT, "--training.steps=3").assert_ok()  # no ema: no state for it
    copy = tmp_path / "copy"
    shutil.copytree(first.dump_folder, copy)

    straight = runner.run(
        *EXACT, "--plugins=ema", "--training.steps=6", dump_folder=first.dump_folder
    ).assert_ok()
    assert "the checkpoint has no state for ema: starting it fresh" in straight.stderr
    # Built in titan_checkpoint_state from the model after the resume: step 3's weights.
    start = torch.load(straight.dump_folder / "ema-start-3.pt")
    weights = read_state(first.dump_folder / "checkpoint" / "step-3", "model")
    _assert_bitwise(start, {name: weights[name] for name in start})

    runner.run(*EXACT, "--plugins=ema", "--training.steps=5", dump_folder=copy).assert_ok()
    interrupted = runner.run(
        *EXACT, "--plugins=ema", "--training.steps=6", dump_folder=copy
    ).assert_ok()
    assert "no state for ema" not in interrupted.stderr
    _assert_bitwise(torch.load(straight.dump_folder / "ema-6.pt"), torch.load(copy / "ema-6.pt"))
