"""Which torchtitan release a TOML file comes from, told from its keys.

torchtitan renamed and moved keys between its 2024 ``train_configs/`` files,
release v0.1.0 and the v0.2.x releases. Most renames are aliases (the same
meaning under another name), but one thing changed meaning without a rename:
the LR warmup formula. A 2024 file therefore gets that era's schedule unless
the file or an override sets ``lr_scheduler.formula``. The user is never asked:
each era has keys no other era (and no titan file) uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Era:
    name: str
    """Shown in the note, e.g. "torchtitan 2024 (train_configs/)"."""
    markers: tuple[str, ...]
    """Keys ("section.key") or whole sections ("section.") only this era's files use; never
    a titan key, so that the effective config titan writes reads as titan's own."""
    defaults: dict[str, object] = field(default_factory=dict)
    """titan keys whose default differs for this era's files (the file still wins)."""


ERAS: tuple[Era, ...] = (
    Era(
        "torchtitan 2024 (train_configs/)",
        (
            "training.batch_size",
            "training.warmup_steps",
            "training.data_parallel_degree",
            "training.data_parallel_shard_degree",
            "training.tensor_parallel_degree",
            "training.fp8_linear",
            "experimental.",
            "float8.enable_float8_linear",
            "checkpoint.interval_type",
            "checkpoint.model_weights_only",
            "model.norm_type",
            "metrics.enable_color_printing",
        ),
        {"lr_scheduler.formula": "torchtitan_2024"},
    ),
    Era(
        "torchtitan v0.2.x",
        (
            "quantize.",
            "compile.enable",
            "compile.components",
            "checkpoint.enable",
            "checkpoint.last_save_model_only",
            "job.print_config",
            "job.custom_config_module",
            "validation.freq",
            "fault_tolerance.",
        ),
    ),
    Era(
        "torchtitan v0.1.0",
        (
            "model.converters",
            "checkpoint.last_save_model_weights_only",
            "job.print_args",
            "metrics.disable_color_printing",
            "lr_scheduler.lr_min",
        ),
    ),
)


def detect_era(keys: Iterable[str]) -> Era | None:
    """The first era (oldest first) one of whose markers occurs in ``keys``; None: titan's own."""
    keys = list(keys)
    for era in ERAS:
        for marker in era.markers:
            if any(k == marker or (marker.endswith(".") and k.startswith(marker)) for k in keys):
                return era
    return None


TORCHTITAN_LOCAL_DATASETS = {
    "c4_test": "tests/assets/c4_test",
    "c4_mini": "torchtitan/datasets/c4_mini",
}
"""Datasets that lived inside torchtitan's own repository (not on the Hugging Face Hub)."""


def local_dataset_problem(dataset: str, dataset_path: str) -> str | None:
    """A torchtitan debug file's ``dataset = "c4_test"`` names files only torchtitan's
    repository has: say so before launching, rather than after the Hub is tried."""
    where = TORCHTITAN_LOCAL_DATASETS.get(dataset)
    if where is None or dataset_path:
        return None
    return (
        f"training.dataset = '{dataset}' is a small dataset kept in torchtitan's repository "
        f"({where}); set training.dataset_path to a copy of that folder, or train on titan's "
        "bundled corpus with --training.dataset=tinyshakespeare"
    )
