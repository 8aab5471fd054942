"""compile: every transformer block (and optionally the loss) really runs through torch.compile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.core.errors import ConfigError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402
from titan.core.loss_function import cross_entropy  # noqa: E402


def test_each_block_is_compiled_and_runs_as_one_graph(tmp_path: Path) -> None:
    """Blocks are OptimizedModules; training runs dynamo-produced graphs with no graph break."""
    torch._dynamo.reset()
    counters.clear()
    trainer = h.build_trainer(tmp_path, ["compile"], [("training.steps", "2")])
    blocks = list(trainer.model.layers.values())
    assert len(blocks) == 6
    for block in blocks:
        assert isinstance(block, OptimizedModule)
        assert type(block._orig_mod).__name__ == "TransformerBlock"
    # embeddings, final norm and output stay eager: only the repeated structure is compiled
    assert not isinstance(trainer.model.output, OptimizedModule)
    result = trainer.train()
    assert result["steps"] == 2
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_the_loss_can_be_compiled_too(tmp_path: Path) -> None:
    torch._dynamo.reset()
    trainer = h.build_trainer(
        tmp_path,
        ["compile"],
        [("compile.model", "false"), ("compile.loss", "true"), ("training.steps", "1")],
    )
    assert not any(isinstance(b, OptimizedModule) for b in trainer.model.layers.values())
    # Wrapped in the compile phase of the build, through the loss the build hooks receive.
    assert getattr(trainer.loss.fn, "_torchdynamo_orig_callable", None) is cross_entropy
    trainer.train()


def test_compile_and_its_validation() -> None:
    with pytest.raises(ConfigError, match="both false"):
        prepare_job(
            None,
            plugins=["compile"],
            overrides=[("compile.model", "false"), ("compile.loss", "false")],
        )
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        prepare_job(None, plugins=["compile"], overrides=[("compile.backend", "nope")])
    with pytest.raises(ConfigError, match="loss-parallel"):
        prepare_job(
            None,
            plugins=["compile", "tp"],
            overrides=[
                ("compile.loss", "true"),
                ("parallelism.tensor_parallel_degree", "2"),
                ("launch.nproc_per_node", "2"),
            ],
        )


def test_torchtitan_compile_keys() -> None:
    assert "compile" in prepare_job(None, overrides=[("training.compile", "true")]).plugins.active
    assert "compile" in prepare_job(None, overrides=[("compile.enable", "true")]).plugins.active
    assert (
        "compile" not in prepare_job(None, overrides=[("compile.enable", "false")]).plugins.active
    )
