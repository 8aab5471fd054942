"""torchtitan-compatible keys.

torchtitan users have TOML files full of keys like ``training.batch_size``
or ``[float8] enable_float8_linear``. An alias maps such a key onto titan's
key, or onto the activation of a plugin. Core declares its own aliases here;
plugins declare theirs through ``titan_config_aliases`` (the ``compile``
plugin owns ``training.compile``), so core never names an optimization.
The full table is in docs/torchtitan.md; which release a file is from is
told by titan.core.config.eras.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigAlias:
    """``source`` ("section.key", or "a.b.c" for a nested table) is accepted and rewritten.

    * ``target``: the titan key receiving the value.
    * ``activates``: a plugin switched on when the value is true.
    * ``item``: for list-valued keys (``model.converters``): this alias handles the
      list item ``item``; it activates ``activates`` when the item is present and
      sets ``target`` to whether it is. Items no alias handles are refused.
    * ``ignore``: accepted and dropped, with the reason in ``note``
      (settings that do not change what is trained, like colour printing).
    * ``unsupported``: accepted while it asks for nothing (false, 1,
      "disabled"); any other value is an error naming ``fix``, never a silent no-op.
    """

    source: str
    target: str | None = None
    activates: str | None = None
    item: str | None = None
    ignore: bool = False
    unsupported: bool = False
    note: str = ""
    fix: str = ""


VALUE_ALIASES: dict[tuple[str, str], str] = {
    ("model.flavor", "debugmodel"): "debug",
    ("checkpoint.async_mode", "async_with_pinned_mem"): "async",
}
"""torchtitan values of titan keys that titan spells differently. torchtitan's
``async_with_pinned_mem`` is its async save with the CPU copy in pinned memory (a faster
copy, the same checkpoint); titan's ``async`` writes the same checkpoint."""

_PP_FIX = (
    "titan has no pipeline parallelism: set it to 1 and shard the model with FSDP "
    "(parallelism.data_parallel_shard_degree) and tensor parallelism instead"
)
_CP_FIX = (
    "titan has no context parallelism: set it to 1 and shorten training.seq_len, or use "
    "activation checkpointing (ac) to fit long sequences"
)
_FT_FIX = (
    "titan has no torchft integration: set fault_tolerance.enable = false; titan resumes "
    "from its newest checkpoint instead (launch.max_restarts, docs/distributed.md)"
)
_FT_ONLY = "used only with fault_tolerance.enable"


def _ignored(source: str, note: str) -> ConfigAlias:
    return ConfigAlias(source, ignore=True, note=note)


CORE_ALIASES: list[ConfigAlias] = [
    ConfigAlias("training.batch_size", target="training.local_batch_size"),
    ConfigAlias("training.data_parallel_degree", target="parallelism.data_parallel_shard_degree"),
    ConfigAlias(
        "training.data_parallel_shard_degree", target="parallelism.data_parallel_shard_degree"
    ),
    ConfigAlias(
        "training.data_parallel_replicate_degree",
        target="parallelism.data_parallel_replicate_degree",
    ),
    ConfigAlias("training.tensor_parallel_degree", target="parallelism.tensor_parallel_degree"),
    ConfigAlias("training.warmup_steps", target="lr_scheduler.warmup_steps"),
    ConfigAlias("lr_scheduler.lr_min", target="lr_scheduler.min_lr_factor"),
    ConfigAlias("checkpoint.enable", target="checkpoint.enable_checkpoint"),
    _ignored("job.config_file", "titan takes the config path as an argument"),
    _ignored("job.use_for_integration_test", "a torchtitan test marker"),
    _ignored("job.print_args", "cosmetic; `titan config show` prints the config"),
    _ignored("job.print_config", "cosmetic; `titan config show` prints the config"),
    _ignored(
        "job.custom_config_module",
        "titan's plugins declare their own sections; see docs/plugins.md",
    ),
    _ignored("metrics.enable_color_printing", "cosmetic; rich decides colours"),
    _ignored("metrics.disable_color_printing", "cosmetic; rich decides colours"),
    _ignored("metrics.rank_0_only", "titan always logs from rank 0"),
    _ignored("metrics.save_for_all_ranks", "titan always logs from rank 0"),
    _ignored("model.norm_type", "Llama uses RMSNorm"),
    _ignored("checkpoint.export_dtype", "titan saves full state; `titan convert` exports weights"),
    _ignored(
        "checkpoint.last_save_model_only",
        "titan saves the full training state at the last step too; `titan convert` "
        "exports the model weights",
    ),
    _ignored(
        "checkpoint.last_save_model_weights_only",
        "titan saves the full training state at the last step too; `titan convert` "
        "exports the model weights",
    ),
    _ignored(
        "parallelism.pipeline_parallel_schedule", "only with pipeline parallelism (degree > 1)"
    ),
    _ignored(
        "parallelism.enable_async_tensor_parallel",
        "titan's tensor parallelism runs synchronous collectives: the same numbers, less "
        "overlap of communication and compute",
    ),
    _ignored(
        "experimental.enable_async_tensor_parallel",
        "titan's tensor parallelism runs synchronous collectives: the same numbers, less "
        "overlap of communication and compute",
    ),
    ConfigAlias(
        "checkpoint.interval_type",
        unsupported=True,
        note="time-based checkpoint intervals",
        fix='titan counts checkpoint.interval in steps: set interval_type = "steps"',
    ),
    ConfigAlias(
        "checkpoint.model_weights_only",
        unsupported=True,
        note="weights-only checkpoints",
        fix="titan saves the full training state; `titan convert` exports the weights",
    ),
    ConfigAlias(
        "metrics.enable_wandb",
        unsupported=True,
        note="Weights & Biases logging",
        fix="write a metrics plugin (docs/plugins.md) or use metrics.enable_tensorboard",
    ),
    *(
        ConfigAlias(
            f"{section}.pipeline_parallel_degree",
            unsupported=True,
            note="pipeline parallelism",
            fix=_PP_FIX,
        )
        for section in ("parallelism", "experimental", "training")
    ),
    *(
        ConfigAlias(
            f"{section}.context_parallel_degree",
            unsupported=True,
            note="context parallelism",
            fix=_CP_FIX,
        )
        for section in ("parallelism", "experimental")
    ),
    ConfigAlias("fault_tolerance.enable", unsupported=True, note="torchft", fix=_FT_FIX),
    *(
        _ignored(f"fault_tolerance.{key}", _FT_ONLY)
        for key in (
            "replica_id",
            "group_size",
            "min_replica_size",
            "process_group",
            "process_group_timeout_ms",
            "semi_sync_method",
            "sync_steps",
            "num_fragments",
            "should_quantize",
            "fragment_sync_delay",
            "fragment_update_alpha",
        )
    ),
]
