"""tp: tensor + sequence + loss parallel on 2 ranks, and 2-D FSDP x TP on 4, as DTensor placements."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.core.errors import ConfigError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402
from titan.optims import tensor_parallel as tp  # noqa: E402

STEPS = [["training.steps", "2"]]
TINY = [list(kv) for kv in h.TINY]
COLWISE = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
ROWWISE = ("attention.wo", "feed_forward.w2")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    degree = [["parallelism.tensor_parallel_degree", "2"]]
    return h.run_probe(
        tmp_path_factory.mktemp("tp2"),
        2,
        {
            "tp": {"plugins": ["tp"], "overrides": [*TINY, *STEPS, *degree]},
            "tp_fp8": {"plugins": ["tp", "fp8"], "overrides": [*TINY, *STEPS, *degree]},
        },
    )


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory) -> dict:
    trainer = h.build_trainer(tmp_path_factory.mktemp("tp1"), [], [("training.steps", "2")])
    return trainer.train()


def test_megatron_placements_on_the_tp_mesh(two_ranks: dict) -> None:
    found = two_ranks["tp"]
    assert found["degrees"] == [1, 1, 2]
    params = found["params"]
    for name, info in params.items():
        assert info["type"] == "DTensor" and info["mesh_dims"] == ["tp"], name
    for i in range(6):
        for lin in COLWISE:  # split by output features: heads / FFN units per rank
            assert params[f"layers.{i}.{lin}.weight"]["placements"] == ["S(0)"]
        for lin in ROWWISE:  # split by input features, outputs reduce-scattered
            assert params[f"layers.{i}.{lin}.weight"]["placements"] == ["S(1)"]
        for norm in ("attention_norm", "ffn_norm"):  # sequence parallel: replicated weights
            assert params[f"layers.{i}.{norm}.weight"]["placements"] == ["R"]
    assert params["layers.0.attention.wq.weight"]["local_shape"] == [128, 256]
    assert params["layers.0.attention.wo.weight"]["local_shape"] == [256, 128]
    assert params["tok_embeddings.weight"]["placements"] == ["S(0)"]  # vocabulary rows
    assert params["output.weight"]["placements"] == ["S(0)"]
    assert params["norm.weight"]["placements"] == ["R"]


def test_sequence_parallel_and_loss_parallel_activations(two_ranks: dict) -> None:
    found = two_ranks["tp"]
    # Between blocks each rank holds half of the sequence (64 -> 32) ...
    assert found["block0_output"] == {"type": "Tensor", "shape": [2, 32, 256]}
    # ... and the logits stay sharded over the vocabulary for the cross-entropy.
    logits = found["logits"]
    assert logits["type"] == "DTensor" and logits["placements"] == ["S(2)"]
    assert logits["shape"] == [2, 64, 2048] and logits["local_shape"] == [2, 64, 1024]


def test_trains_like_one_process(two_ranks: dict, one_rank: dict) -> None:
    result = two_ranks["tp"]["result"]
    assert result["steps"] == 2
    assert result["first_loss"] == pytest.approx(one_rank["first_loss"], rel=1e-5)
    assert result["last_loss"] == pytest.approx(one_rank["last_loss"], rel=1e-4)


def test_float8_linears_are_sharded_too(two_ranks: dict) -> None:
    found = two_ranks["tp_fp8"]
    assert found["modules"]["layers.0.attention.wq"] == "Float8Linear"
    assert found["params"]["layers.0.attention.wq.weight"]["placements"] == ["S(0)"]
    assert found["params"]["layers.0.feed_forward.w2.weight"]["placements"] == ["S(1)"]
    # gloo cannot all-gather float8, so on CPU the plain styles are used, and it says so
    assert "gloo cannot all-gather float8" in two_ranks["_log"]
    assert found["result"]["last_loss"] == pytest.approx(
        two_ranks["tp"]["result"]["last_loss"], rel=0.01
    )


def test_float8_styles_chosen_for_tensorwise_float8_blocks(tmp_path: Path) -> None:
    """With NCCL, tensorwise float8 blocks get torchao's float8 styles (all-gathers in float8)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, PrepareModuleInput
    from torchao.float8.float8_tensor_parallel import (
        Float8ColwiseParallel,
        Float8RowwiseParallel,
        PrepareFloat8ModuleInput,
    )

    float8 = tp.block_plan(True)
    assert type(float8["attention.wq"]) is Float8ColwiseParallel
    assert type(float8["attention.wo"]) is Float8RowwiseParallel
    assert type(float8["attention"]) is PrepareFloat8ModuleInput
    plain = tp.block_plan(False)
    assert type(plain["attention.wq"]) is ColwiseParallel
    assert type(plain["feed_forward"]) is PrepareModuleInput

    def first_block(recipe: str) -> torch.nn.Module:
        job = prepare_job(
            None,
            plugins=["fp8"],
            overrides=[*h.TINY, ("fp8.recipe_name", recipe), ("job.dump_folder", str(tmp_path))],
        )
        family = job.models.get("llama3")
        with torch.device("meta"):
            model = family.build(family.flavor("debug"))
        from titan.optims import fp8

        fp8.titan_convert_model(model=model, config=job.config, parallel=_FakeParallel())
        return model.layers["0"]

    assert tp._uses_float8_tensorwise(first_block("tensorwise"))
    assert not tp._uses_float8_tensorwise(first_block("rowwise"))  # rowwise: plain styles


class _FakeParallel:
    device = torch.device("cpu")


def test_degree_must_divide_heads_kv_heads_ffn_vocab_and_sequence() -> None:
    with pytest.raises(ConfigError, match=r"does not divide.*attention heads \(n_heads\) 16"):
        prepare_job(
            None,
            overrides=[("parallelism.tensor_parallel_degree", "3"), ("launch.nproc_per_node", "3")],
        )
    with pytest.raises(ConfigError, match=r"training.seq_len \(sequence parallel\) 66"):
        prepare_job(
            None,
            overrides=[
                ("parallelism.tensor_parallel_degree", "4"),
                ("launch.nproc_per_node", "4"),
                ("training.seq_len", "66"),
            ],
        )


def test_activation_and_degree() -> None:
    """The degree switches TP on (as in torchtitan); --plugins tp alone takes all processes."""
    by_degree = prepare_job(
        None,
        overrides=[("parallelism.tensor_parallel_degree", "2"), ("launch.nproc_per_node", "2")],
    )
    assert "tp" in by_degree.plugins.active
    assert any("tensor_parallel_degree = 2 -> plugin 'tp'" in n for n in by_degree.plugins.notes)
    by_plugin = prepare_job(None, plugins=["tp"], overrides=[("launch.nproc_per_node", "2")])
    assert by_plugin.config.parallelism.tensor_parallel_degree == 2
    assert any("using 2" in n for n in by_plugin.config.notes)
    with pytest.raises(ConfigError, match="tensor_parallel_degree is 1"):
        prepare_job(None, plugins=["tp"])  # one process: nothing to split over


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return h.run_probe(
        tmp_path_factory.mktemp("tp4"),
        4,
        {
            "fsdp_tp": {
                "plugins": ["tp", "fp8", "fp8-ag"],
                "overrides": [*TINY, *STEPS, ["parallelism.tensor_parallel_degree", "2"]],
            }
        },
    )


def test_two_dimensional_fsdp_x_tp(four_ranks: dict) -> None:
    """4 ranks = FSDP 2 x TP 2: weights sharded on both mesh dimensions, float8 all-gather on FSDP's."""
    found = four_ranks["fsdp_tp"]
    assert found["degrees"] == [1, 2, 2]
    params = found["params"]
    wq, wo = params["layers.0.attention.wq.weight"], params["layers.0.attention.wo.weight"]
    # wq: TP splits the rows, FSDP splits each TP shard's rows again (a strided shard)
    assert wq["mesh_dims"] == ["dp_shard", "tp"] and wq["placements"] == ["_S(0, 2)", "S(0)"]
    assert wo["placements"] == ["S(0)", "S(1)"]  # TP splits columns, FSDP rows
    assert wq["local_shape"] == [64, 256] and wo["local_shape"] == [128, 128]
    assert wq["local_type"] == "WeightWithDynamicFloat8CastTensor"
    assert "torch.float8_e4m3fn" in found["param_all_gather_dtypes"]
    assert found["block0_output"]["shape"] == [2, 32, 256]  # sequence parallel within TP
    result = found["result"]
    assert result["steps"] == 2 and 7.0 < result["last_loss"] < 9.0
