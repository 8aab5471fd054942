"""fp8: the linears really become torchao Float8Linear and really compute in float8."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402
from torchao.float8.config import ScalingGranularity  # noqa: E402
from torchao.float8.float8_linear import Float8Linear  # noqa: E402
from torchao.float8.float8_training_tensor import Float8TrainingTensor  # noqa: E402

from titan.core.errors import ConfigError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402
from titan.optims import _common, fp8  # noqa: E402

BLOCK_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class DtypeLog(TorchDispatchMode):
    """Records the ops that receive float8 tensors and the dtypes every op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.float8_ops: set[str] = set()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if any(isinstance(a, Float8TrainingTensor) for a in args):
            self.float8_ops.add(str(func.overloadpacket))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


class ScaledMMCount:
    """Counts calls of ``torch._scaled_mm`` (the hardware float8 matmul torchao calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = torch._scaled_mm

        def counting(*args, **kwargs):  # noqa: ANN002, ANN003
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch, "_scaled_mm", counting)


def linears(model: torch.nn.Module) -> dict[str, type]:
    return {n: type(m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def forward_backward(trainer) -> DtypeLog:  # noqa: ANN001
    inputs = torch.randint(0, 2048, (2, 64))
    log = DtypeLog()
    with log:
        logits = trainer.model(inputs)
        trainer.cross_entropy(logits, inputs).backward()
    return log


def test_block_linears_become_float8_and_the_output_layer_does_not(tmp_path: Path) -> None:
    trainer = h.build_trainer(tmp_path, ["fp8"])
    types = linears(trainer.model)
    assert len(types) == 6 * 7 + 1
    for name, cls in types.items():
        expected = torch.nn.Linear if name == "output" else Float8Linear
        assert cls is expected, (name, cls)
        if cls is Float8Linear:
            m = trainer.model.get_submodule(name)
            assert m.config.cast_config_weight.scaling_granularity is ScalingGranularity.TENSORWISE


def test_float8_tensors_flow_in_forward_and_backward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matmuls get float8 operands (e4m3 forward, e5m2 gradients) and run as _scaled_mm.

    oneDNN is off so that CPUs with AMX, where torch would send the products to
    oneDNN's slow reference kernel and titan therefore emulates, run this path too.
    """
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    trainer = h.build_trainer(tmp_path, ["fp8"])
    hardware = fp8.float8_matmul_available("cpu")  # probed before counting: it runs one itself
    scaled_mm = ScaledMMCount(monkeypatch)
    log = forward_backward(trainer)
    assert "aten.mm" in log.float8_ops
    assert torch.float8_e4m3fn in log.dtypes and torch.float8_e5m2 in log.dtypes
    if hardware:  # this CPU build has float8 matmuls
        # 42 float8 linears x (output, grad input, grad weight)
        assert scaled_mm.calls == 42 * 3
    plain = forward_backward(h.build_trainer(tmp_path / "plain", []))
    assert not {torch.float8_e4m3fn, torch.float8_e5m2} & plain.dtypes
    assert not plain.float8_ops


def test_emulation_casts_to_float8_but_multiplies_in_high_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = h.build_trainer(tmp_path, ["fp8"], [("fp8.emulate", "true")])
    scaled_mm = ScaledMMCount(monkeypatch)
    log = forward_backward(trainer)
    assert torch.float8_e4m3fn in log.dtypes and "aten.mm" in log.float8_ops
    assert scaled_mm.calls == 0


def test_filter_skips_named_layers_and_dimensions_not_multiple_of_16(tmp_path: Path) -> None:
    trainer = h.build_trainer(tmp_path, ["fp8"], [("fp8.filter_fqns", "attention.wk,w2")])
    types = linears(trainer.model)
    for name, cls in types.items():
        kept = name == "output" or name.endswith("attention.wk") or name.endswith("w2")
        assert (cls is torch.nn.Linear) == kept, name
    convert = fp8.make_filter([])
    assert convert(torch.nn.Linear(32, 48, device="meta"), "layers.0.x")
    assert not convert(torch.nn.Linear(20, 48, device="meta"), "layers.0.x")  # 20 % 16
    assert not convert(torch.nn.Linear(32, 40, device="meta"), "layers.0.x")  # 40 % 16
    assert not convert(torch.nn.Linear(32, 48, device="meta"), "output")


@pytest.mark.parametrize("recipe", ["rowwise", "rowwise_with_gw_hp"])
def test_rowwise_recipes_scale_per_row(tmp_path: Path, recipe: str) -> None:
    trainer = h.build_trainer(tmp_path, ["fp8"], [("fp8.recipe_name", recipe)])
    wq = trainer.model.get_submodule("layers.0.attention.wq")
    assert isinstance(wq, Float8Linear)
    assert wq.config.cast_config_input.scaling_granularity is ScalingGranularity.AXISWISE
    if recipe == "rowwise_with_gw_hp":  # the weight gradient's matmul stays in high precision
        assert wq.config.cast_config_grad_output_for_grad_weight.scaling_type.name == "DISABLED"


def test_rowwise_with_gw_hp_trains_under_cpu_autocast(tmp_path: Path) -> None:
    """torchao's Float8Linear ignores CPU autocast; titan casts its input like F.linear would.

    Without that, the high-precision weight-gradient matmul gets a float32 input
    and a bfloat16 gradient and fails ("expected m1 and m2 to have the same dtype").
    """
    trainer = h.build_trainer(
        tmp_path,
        ["fp8"],
        [
            ("fp8.recipe_name", "rowwise_with_gw_hp"),
            ("training.mixed_precision_param", "bfloat16"),
            ("training.steps", "1"),
        ],
    )
    result = trainer.train()
    assert result["steps"] == 1 and torch.isfinite(torch.tensor(result["last_loss"]))


def test_falls_back_to_emulation_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fp8, "float8_matmul_available", lambda *a: False)
    monkeypatch.setattr(_common, "_said", set())
    cfg = fp8.Float8Config()
    for _ in range(3):
        assert fp8.float8_linear_config(cfg, torch.device("cpu")).emulate is True
    err = capsys.readouterr().err
    assert err.count("float8 matmuls are not available") == 1, err
    assert "emulation" in err
    monkeypatch.setattr(fp8, "float8_matmul_available", lambda *a: True)
    assert fp8.float8_linear_config(cfg, torch.device("cpu")).emulate is False


def test_cpu_probe_matches_this_torch_build() -> None:
    """On CPU the answer comes from running a tiny _scaled_mm; it must agree with doing so."""
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(
            a, a.t(), scale_a=torch.ones(()), scale_b=torch.ones(()), out_dtype=torch.float32
        )
        works = True
    except (RuntimeError, NotImplementedError):
        works = False
    assert fp8.scaled_mm_runs("cpu") is works


ONEDNN_SCALED_MM = """
from titan.optims import fp8
assert fp8.scaled_mm_runs("cpu")  # one float8 matmul, sent wherever torch sends it
print("predicted", fp8.onednn_reference_float8("cpu"))
"""


def test_onednn_prediction_matches_where_torch_sends_the_product() -> None:
    """oneDNN's own log (ONEDNN_VERBOSE) says whether it ran the float8 matmul, and how."""
    out = subprocess.run(
        [sys.executable, "-c", ONEDNN_SCALED_MM],
        env={**os.environ, "ONEDNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    runs = [
        line for line in out.splitlines() if line.startswith("onednn_verbose,v1,primitive,exec")
    ]
    assert f"predicted {bool(runs)}" in out, out
    for line in runs:  # what titan avoids: the reference implementation ("ref:any")
        assert ",matmul,ref:" in line and "f8_e4m3" in line, line


def test_amx_cpus_emulate_unless_onednn_is_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (fp8.scaled_mm_runs("cpu") and torch.backends.mkldnn.is_available()):
        pytest.fail("this torch build has CPU _scaled_mm and oneDNN; the test relies on both")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(_common, "_said", set())
    cfg = fp8.Float8Config()
    assert fp8.float8_linear_config(cfg, torch.device("cpu")).emulate is True
    assert "oneDNN" in capsys.readouterr().err
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # torch's own path instead
    assert fp8.float8_linear_config(cfg, torch.device("cpu")).emulate is False
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert fp8.float8_linear_config(cfg, torch.device("cpu")).emulate is False


def test_torchtitan_float8_keys() -> None:
    job = prepare_job(
        None,
        overrides=[
            ("float8.enable_float8_linear", "true"),
            ("float8.recipe_name", "rowwise"),
            ("float8.filter_fqns", "attention.wk"),
        ],
    )
    assert "fp8" in job.plugins.active
    assert job.config.fp8.recipe_name == "rowwise"
    assert job.config.fp8.filter_fqns == ["attention.wk"]
    off = prepare_job(None, overrides=[("float8.enable_float8_linear", "false")])
    assert "fp8" not in off.plugins.active


def test_refuses_a_filter_that_converts_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="converted none"):
        h.build_trainer(tmp_path, ["fp8"], [("fp8.filter_fqns", "layers")])
    with pytest.raises(ConfigError, match="empty name"):
        prepare_job(None, plugins=["fp8"], overrides=[("fp8.filter_fqns", "['']")])
