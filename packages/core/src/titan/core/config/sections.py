"""The config sections titan's core owns.

Section and key names follow torchtitan where it has the concept, so that
its users feel at home (``job.dump_folder``, ``training.local_batch_size``,
``parallelism.data_parallel_shard_degree`` ...). Plugins add their own
sections through the ``titan_config_sections`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class JobSection:
    dump_folder: str = "./outputs"
    """Where the run writes metrics.jsonl, TensorBoard files and checkpoints."""
    description: str = "titan job"


@dataclass
class ModelSection:
    name: str = "llama3"
    """Model family, see `titan models list`."""
    flavor: str = "debug"
    tokenizer_path: str = ""
    """Tokenizer file; empty means the tokenizer bundled with titan."""
    vocab_size: int = 0
    """0 keeps the flavor's vocabulary size."""


@dataclass
class OptimizerSection:
    name: Literal["AdamW", "Adam"] = "AdamW"
    lr: float = 8e-4
    eps: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    implementation: Literal["fused", "foreach", "for-loop"] = "fused"
    """torch's optimizer kernel; fused is ~4x faster per step on CPU."""


@dataclass
class LRSchedulerSection:
    warmup_steps: int = 10
    decay_type: Literal["linear", "cosine", "none"] = "linear"
    lr_min: float = 0.1
    """Floor of the decay, as a fraction of optimizer.lr."""


@dataclass
class TrainingSection:
    steps: int = 100
    local_batch_size: int = 8
    """Sequences per rank per micro-step (torchtitan's batch_size)."""
    global_batch_size: int = -1
    """Sequences per optimizer step over all ranks; -1 means local x data-parallel
    degree. A multiple of that product means gradient accumulation."""
    seq_len: int = 256
    max_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    dataset: str = "tinyshakespeare"
    """A name titan bundles, or a local path / hub name (see docs/data.md)."""
    dataset_path: str = ""
    """Where to read `dataset` from; empty means titan's bundled copy."""
    mixed_precision_param: Literal["bfloat16", "float32"] = "bfloat16"
    """Compute dtype: autocast on one rank, FSDP2 parameter dtype when sharded."""
    mixed_precision_reduce: Literal["float32", "bfloat16"] = "float32"
    seed: int = 42
    deterministic: bool = False
    """Use torch's deterministic algorithms (bitwise-reproducible runs)."""


@dataclass
class MetricsSection:
    log_freq: int = 10
    enable_tensorboard: bool = False
    save_tb_folder: str = "tb"
    """Relative to job.dump_folder."""


@dataclass
class CheckpointSection:
    enable_checkpoint: bool = False
    folder: str = "checkpoint"
    """Relative to job.dump_folder."""
    interval: int = 500
    keep_latest_k: int = 0
    """Keep only the newest K checkpoints; 0 keeps all."""
    async_mode: Literal["disabled", "async"] = "disabled"
    load_step: int = -1
    """-1 resumes from the newest complete checkpoint."""


@dataclass
class ParallelismSection:
    data_parallel_shard_degree: int = -1
    """-1: all ranks not used by other dimensions."""
    data_parallel_replicate_degree: int = 1
    tensor_parallel_degree: int = 1


@dataclass
class LaunchSection:
    nproc_per_node: int = 0
    """Processes per machine (--nproc); 0 means one per GPU, or 1 on a CPU machine."""
    nnodes: int = 1
    """Machines (--nnodes)."""


@dataclass
class PluginsSection:
    enabled: list[str] = field(default_factory=list)
    """Opt-in plugins to activate, as with --plugins (both lists are merged)."""


CORE_SECTIONS: dict[str, type] = {
    "job": JobSection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "lr_scheduler": LRSchedulerSection,
    "training": TrainingSection,
    "metrics": MetricsSection,
    "checkpoint": CheckpointSection,
    "parallelism": ParallelismSection,
    "launch": LaunchSection,
    "plugins": PluginsSection,
}
