"""torchtitan-compatible keys.

torchtitan users have TOML files full of keys like ``training.batch_size``
or ``[float8] enable_float8_linear``. An alias maps such a key onto titan's
key, or onto the activation of a plugin. Core declares its own aliases here;
plugins declare theirs through ``titan_config_aliases`` (the ``compile``
plugin owns ``training.compile``), so core never names an optimization.
The full table is in docs/torchtitan.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigAlias:
    """``source`` ("section.key") is accepted and rewritten.

    * ``target``: the titan key receiving the value.
    * ``activates``: a plugin switched on when the value is true.
    * ``ignore``: accepted and dropped, with the reason in ``note``
      (settings that do not change what is trained, like profiling).
    * ``unsupported``: accepted while it asks for nothing (false, 1,
      "disabled"); any other value is an error, never a silent no-op.
    """

    source: str
    target: str | None = None
    activates: str | None = None
    ignore: bool = False
    unsupported: bool = False
    note: str = ""


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
    ConfigAlias("job.config_file", ignore=True, note="titan takes the config path as an argument"),
    ConfigAlias("job.use_for_integration_test", ignore=True, note="a torchtitan test marker"),
    ConfigAlias("profiling.enable_profiling", ignore=True, note="profiling is not built in yet"),
    ConfigAlias("profiling.save_traces_folder", ignore=True, note="profiling is not built in yet"),
    ConfigAlias("profiling.profile_freq", ignore=True, note="profiling is not built in yet"),
    ConfigAlias(
        "profiling.enable_memory_snapshot", ignore=True, note="profiling is not built in yet"
    ),
    ConfigAlias("metrics.enable_color_printing", ignore=True, note="rich decides colours"),
    ConfigAlias("metrics.rank_0_only", ignore=True, note="titan always logs from rank 0"),
    ConfigAlias("model.norm_type", ignore=True, note="Llama uses RMSNorm"),
    ConfigAlias("checkpoint.interval_type", unsupported=True, note="intervals are in steps"),
    ConfigAlias(
        "checkpoint.model_weights_only",
        unsupported=True,
        note="titan saves full training state; use `titan convert` to export weights",
    ),
    ConfigAlias(
        "checkpoint.export_dtype", ignore=True, note="use `titan convert` to export weights"
    ),
    ConfigAlias(
        "metrics.enable_wandb",
        unsupported=True,
        note="Weights & Biases logging is not built in; write a metrics plugin",
    ),
    ConfigAlias(
        "parallelism.pipeline_parallel_degree",
        unsupported=True,
        note="pipeline parallelism is not supported yet",
    ),
    ConfigAlias(
        "experimental.pipeline_parallel_degree",
        unsupported=True,
        note="pipeline parallelism is not supported yet",
    ),
    ConfigAlias(
        "parallelism.context_parallel_degree",
        unsupported=True,
        note="context parallelism is not supported yet",
    ),
    ConfigAlias(
        "experimental.context_parallel_degree",
        unsupported=True,
        note="context parallelism is not supported yet",
    ),
    ConfigAlias(
        "parallelism.enable_async_tensor_parallel",
        unsupported=True,
        note="async tensor parallelism is not supported yet",
    ),
    ConfigAlias(
        "experimental.enable_async_tensor_parallel",
        unsupported=True,
        note="async tensor parallelism is not supported yet",
    ),
]
