"""When titan calls the example's hooks, and with what: an in-process run's record of hook calls.

``titan_runner.run_in_process`` trains in the test's own process and records every hook
call in order (pluggy's hook-call monitoring), so the test asserts on the calls
themselves rather than on what the plugins printed: ``titan_build_optimizer`` once,
after the model is built and before training starts, answered by ``sgd`` ahead of the
built-in ``optimizer`` plugin; ``titan_checkpoint_saved`` once per checkpoint, with its
step and its published folder, after that step's ``titan_step_end`` and before the next
step starts, reaching ``mirror``, whose copy is then already there.
"""

from __future__ import annotations

import torch

from titan.core.testing import TitanRunner

SGD = ("--plugins=sgd,mirror", "--optimizer.name=SGD", "--optimizer.lr=0.05")
CHECKPOINTS = ("--checkpoint.enable_checkpoint=true", "--checkpoint.interval=2")


def test_hooks_run_in_order_with_their_arguments(titan_runner: TitanRunner) -> None:
    mirror = titan_runner.path / "mirror"
    result = titan_runner.run_in_process(*SGD, *CHECKPOINTS, f"--mirror.folder={mirror}")
    result.assert_ok()
    names = result.hook_names

    [build] = result.calls("titan_build_optimizer")
    assert set(build.kwargs) == {"model", "config", "parallel"}
    assert build.kwargs["config"].optimizer.name == "SGD"
    assert build.plugins.index("sgd") < build.plugins.index("optimizer")
    assert isinstance(build.result, torch.optim.SGD)
    assert build.result.defaults["lr"] == 0.05
    build_at = result.hook_calls.index(build)
    assert names.index("titan_apply_data_parallel") < build_at < names.index("titan_train_start")

    saved = result.calls("titan_checkpoint_saved")
    assert [(c.kwargs["step"], c.kwargs["path"]) for c in saved] == [
        (2, result.checkpoints[2]),
        (4, result.checkpoints[4]),
    ]
    trainer = result.calls("titan_train_start")[0].kwargs["trainer"]
    for call in saved:
        step, at = call.kwargs["step"], result.hook_calls.index(call)
        assert call.kwargs["trainer"] is trainer
        assert "mirror" in call.plugins
        ends = [i for i, c in enumerate(result.hook_calls) if c.name == "titan_step_end"]
        step_end = next(i for i in ends if result.hook_calls[i].kwargs["step"] == step)
        starts = [
            i
            for i, c in enumerate(result.hook_calls)
            if c.name == "titan_step_start" and c.kwargs["step"] > step
        ]
        assert step_end < at, f"checkpoint {step} saved before its step ended"
        assert all(at < i for i in starts), f"checkpoint {step} reported after step {step + 1}"
        assert (mirror / f"step-{step}").is_dir()
    assert names[-1] == "titan_train_end"
