"""fp8-ag: on 2 FSDP ranks the weights really travel in float8, with globally correct scales."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.core.errors import ConfigError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402

TINY = [*(list(kv) for kv in h.TINY), ["training.steps", "2"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two FSDP runs on 2 ranks: float8 linears all-gathered in fp32, and in float8."""
    return h.run_probe(
        tmp_path_factory.mktemp("fp8ag"),
        2,
        {
            "fp8": {"plugins": ["fp8"], "overrides": TINY},
            "fp8_ag": {"plugins": ["fp8-ag"], "overrides": TINY},  # fp8 comes with it
        },
    )


def test_weights_become_float8_all_gather_tensors(runs: dict) -> None:
    found = runs["fp8_ag"]
    assert {"fp8", "fp8-ag", "fsdp"} <= set(found["active"])
    assert found["degrees"] == [1, 2, 1]
    for name, info in found["params"].items():
        assert info["type"] == "DTensor" and info["placements"] == ["S(0)"], name
        float8 = name.startswith("layers.") and (
            ".attention.w" in name or ".feed_forward.w" in name
        )
        expected = "WeightWithDynamicFloat8CastTensor" if float8 else "Tensor"
        assert info["local_type"] == expected, name
    assert runs["fp8"]["params"]["layers.0.attention.wq.weight"]["local_type"] == "Tensor"


def test_all_gathers_move_float8_bytes(runs: dict) -> None:
    """FSDP gathers the float8 weights as float8_e4m3fn: about a quarter of fp32's bytes."""
    with_ag, without = runs["fp8_ag"], runs["fp8"]
    assert "torch.float8_e4m3fn" in with_ag["param_all_gather_dtypes"]
    assert without["param_all_gather_dtypes"] == ["torch.float32"]
    assert len(with_ag["all_gathers"]) == len(without["all_gathers"]) > 0
    sent = sum(a["bytes"] for a in with_ag["all_gathers"])
    sent_fp32 = sum(a["bytes"] for a in without["all_gathers"])
    # blocks shrink 4x; embeddings, norms and the output layer stay fp32
    assert sent < 0.4 * sent_fp32, (sent, sent_fp32)


def test_scales_are_precomputed_from_the_whole_weight(runs: dict) -> None:
    """After each optimizer step one all-reduce sets every scale to float8 max / global amax."""
    scales = runs["fp8_ag"]["float8_scales"]
    assert len(scales) == 42
    for row in scales:
        assert row["scale"] == pytest.approx(row["expected"], rel=1e-6), row
    # the rank's own shard alone would give another scale for some weights: it was all-reduced
    assert any(row["local_amax"] < row["amax"] for row in scales)


def test_same_training_as_float8_without_it(runs: dict) -> None:
    """Casting the shards before the gather, with the global scale, is numerically the same."""
    a, b = runs["fp8_ag"]["result"], runs["fp8"]["result"]
    assert a["last_loss"] == pytest.approx(b["last_loss"], rel=1e-5)


def test_requires_tensorwise_and_sharding(tmp_path: Path) -> None:
    job = prepare_job(None, plugins=["fp8-ag"], overrides=[("launch.nproc_per_node", "2")])
    assert "fp8" in job.plugins.active  # REQUIRES
    assert any("needs 'fp8'" in n for n in job.plugins.notes)
    with pytest.raises(ConfigError, match="needs fp8.recipe_name = 'tensorwise'"):
        prepare_job(
            None,
            plugins=["fp8-ag"],
            overrides=[("fp8.recipe_name", "rowwise"), ("launch.nproc_per_node", "2")],
        )
    with pytest.raises(ConfigError, match="does not shard them"):
        prepare_job(None, plugins=["fp8-ag"], overrides=[("launch.nproc_per_node", "1")])
    with pytest.raises(ConfigError, match="does not shard them"):  # 2 processes, both for TP
        prepare_job(
            None,
            plugins=["fp8-ag"],
            overrides=[("launch.nproc_per_node", "2"), ("parallelism.tensor_parallel_degree", "2")],
        )
    # world size unknown before launch (one per GPU): the rank refuses when it builds
    with pytest.raises(ConfigError, match="does not shard them"):
        h.build_trainer(tmp_path, ["fp8-ag"])


def test_torchtitan_float8_fsdp_keys() -> None:
    job = prepare_job(
        None,
        overrides=[
            ("float8.enable_fsdp_float8_all_gather", "true"),
            ("float8.precompute_float8_dynamic_scale_for_fsdp", "false"),
        ],
        validate=False,
    )
    assert {"fp8", "fp8-ag"} <= job.plugins.active
    assert job.config.fp8_ag.precompute_scales is False
