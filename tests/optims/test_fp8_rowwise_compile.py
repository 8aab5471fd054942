"""fp8 rowwise sets torchtitan's inductor workaround for NaN losses under compile."""

from __future__ import annotations

import sys
from pathlib import Path

import torch._inductor.config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402


def test_rowwise_with_compile_emulates_precision_casts(tmp_path: Path) -> None:
    before = inductor_config.emulate_precision_casts
    try:
        inductor_config.emulate_precision_casts = False
        h.build_trainer(tmp_path / "tensorwise", ["fp8", "compile"])
        assert inductor_config.emulate_precision_casts is False  # only rowwise needs it
        trainer = h.build_trainer(
            tmp_path / "rowwise", ["fp8", "compile"], [("fp8.recipe_name", "rowwise")]
        )
        assert inductor_config.emulate_precision_casts is True
        assert trainer.config.fp8.recipe_name == "rowwise"
    finally:
        inductor_config.emulate_precision_casts = before
