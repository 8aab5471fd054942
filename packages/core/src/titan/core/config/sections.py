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
    """Tokenizer file, or a folder holding tokenizer.model / tokenizer.json; empty means
    model.hf_assets_path if set, else the tokenizer bundled with titan."""
    hf_assets_path: str = ""
    """torchtitan v0.2's folder of Hugging Face files (tokenizer.json, tokenizer.model,
    config.json ...); titan reads the tokenizer from it when tokenizer_path is empty."""
    vocab_size: int = 0
    """0 keeps the flavor's vocabulary size."""

    def __post_init__(self) -> None:
        if not self.tokenizer_path and self.hf_assets_path:
            self.tokenizer_path = self.hf_assets_path


@dataclass
class OptimizerSection:
    name: str = "AdamW"
    """AdamW and Adam are built in; an optimizer plugin builds others (titan_build_optimizer)."""
    lr: float = 8e-4
    eps: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    implementation: Literal["fused", "foreach", "for-loop"] = "fused"
    """torch's optimizer kernel; fused is ~4x faster per step on CPU."""


@dataclass
class LRSchedulerSection:
    """torchtitan's warmup-stable-decay schedule (titan.core.lr_schedule, docs/config.md)."""

    warmup_steps: int = 10
    """Linear warmup over this many steps: step i (1-based) uses lr * i / warmup_steps."""
    decay_ratio: float | None = None
    """Fraction of the steps spent decaying, at the end; the steps between warmup and decay
    keep the peak LR. Unset: decay starts right after warmup."""
    decay_type: Literal["linear", "cosine", "none", "sqrt"] = "linear"
    """Shape of the decay; none keeps the peak LR after warmup."""
    min_lr_factor: float = 0.0
    """Floor of the decay, as a fraction of optimizer.lr (titan's older name: lr_min)."""
    total_steps: int | None = None
    """Steps the schedule spans; unset: training.steps (set it to stop a run early on the
    schedule of a longer one)."""
    formula: Literal["torchtitan", "torchtitan_2024"] = "torchtitan"
    """torchtitan: v0.1.0-v0.2.2's schedule; torchtitan_2024: the 2024 files' schedule
    (warmup (i+1)/(w+1), linear decay, no floor), chosen automatically for 2024-era files."""


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
    nonfinite: Literal["stop", "skip"] = "stop"
    """NaN/inf gradients are never applied; stop: end the run (resume from the last
    checkpoint), skip: drop that optimizer step and go on (docs/reliability.md)."""


@dataclass
class MetricsSection:
    log_freq: int = 10
    enable_tensorboard: bool = False
    save_tb_folder: str = "tb"
    """Relative to job.dump_folder."""
    peak_tflops: float = 0.0
    """The device's peak TFLOP/s for MFU; 0 looks it up (GPU table, or a measured CPU probe).
    See docs/metrics.md."""


@dataclass
class CheckpointSection:
    enable_checkpoint: bool = False
    folder: str = "checkpoint"
    """Relative to job.dump_folder; holds one step-<N> folder per checkpoint."""
    interval: int = 500
    """Save every this many steps; the last step is always saved."""
    keep_latest_k: int = 0
    """Keep only the newest K checkpoints; 0 keeps all."""
    async_mode: Literal["disabled", "async"] = "disabled"
    """async: copy the state to CPU memory and write it in a background thread
    while training goes on; the checkpoint becomes visible once written."""
    load_step: int = -1
    """-1 resumes from the newest complete checkpoint."""
    initial_load_path: str = ""
    """Checkpoint folder whose model weights start a run that has no checkpoint of its own
    yet (e.g. from `titan convert hf-to-titan`); only the model is read. See docs/models.md."""


@dataclass
class CommSection:
    """Collective timeouts (torchtitan's [comm]): a rank that died or hangs ends the job."""

    init_timeout_seconds: int = 300
    """Until the first step is done (model build, first collectives)."""
    train_timeout_seconds: int = 100
    """After the first step: the longest any collective may wait for the other ranks."""


@dataclass
class ParallelismSection:
    data_parallel_shard_degree: int = -1
    """-1: all ranks not used by other dimensions."""
    data_parallel_replicate_degree: int = 1
    """More than 1 with sharding: HSDP (shard within a group, replicate across groups)."""
    tensor_parallel_degree: int = 1
    fsdp_reshard_after_forward: Literal["default", "always", "never"] = "default"
    """Free gathered weights after forward: default = every block but the last,
    always = all (least memory), never = none (no all-gather in backward)."""
    init_full_model_on_rank0: bool | Literal["auto"] = "auto"
    """true: rank 0 initialises the whole model on its CPU and scatters it to the shards, so
    the weights are the same for any number of ranks (needs the full fp32 model in rank 0's
    memory); false: every rank initialises its own shards on its device; auto: true for
    models up to 1B parameters, false above and when a checkpoint provides the weights."""


@dataclass
class LaunchSection:
    nproc_per_node: int = 0
    """Processes per machine (--nproc); 0 means one per GPU, or 1 on a CPU machine."""
    nnodes: int = 1
    """Machines (--nnodes)."""
    rdzv_endpoint: str = ""
    """host:port every machine can reach (the first machine's), needed when nnodes > 1."""
    rdzv_backend: str = "c10d"
    """torchrun rendezvous backend (c10d: hosted by the first machine's agent)."""
    rdzv_id: str = "titan"
    """Job id shared by the machines of one run (use a unique one per concurrent run)."""
    max_restarts: int = 0
    """Times torchrun restarts all ranks after a failure (resume uses the newest checkpoint)."""


@dataclass
class PluginsSection:
    enabled: list[str] = field(default_factory=list)
    """Opt-in plugins to activate, as with --plugins (both lists are merged)."""


@dataclass
class DataSection:
    """How documents are read, mixed and fed (docs/data.md). Sources are `training.dataset`."""

    text_column: str = "text"
    """Column holding each document's text (C4 and most corpora: text)."""
    hub_config: str = ""
    """Config of a Hugging Face Hub dataset (allenai/c4: en); `name:config` works too."""
    sources: list[str] = field(default_factory=list)
    """Datasets to mix (paths, hub names, s3:// URLs, a plugin's prefix such as sm-channel:NAME); replaces
    training.dataset/dataset_path when set."""
    weights: list[float] = field(default_factory=list)
    """Sampling weight per source (normalised); empty means equal weights."""
    text_columns: list[str] = field(default_factory=list)
    """Text column per source, when the mixed sources differ; empty: text_column for all."""
    text_sample_by: Literal["paragraph", "line", "document"] = "paragraph"
    """How .txt files are cut into documents."""
    num_workers: int = 0
    """DataLoader worker processes per rank (they tokenize); 0 tokenizes in the training process."""
    pin_memory: bool = False
    """Pin batches in page-locked memory (faster host-to-GPU copies; ignored without CUDA)."""


@dataclass
class ValidationSection:
    """Validation loss every `eval_interval` steps (torchtitan's [validation])."""

    enable: bool = False
    eval_interval: int = 100
    """Evaluate every this many steps (torchtitan: validation.freq)."""
    steps: int = 10
    """Batches per rank per evaluation; -1 evaluates the whole validation split."""
    dataset: str = ""
    """Empty: the validation split of the training dataset(s)."""
    dataset_path: str = ""
    """A file or folder (or hub name, s3:// URL, a plugin's prefix such as sm-channel:NAME) holding
    validation data."""
    split: str = "validation"
    """Split name: a hub split, or the word that marks validation files in a folder."""
    local_batch_size: int = 0
    """0: training.local_batch_size."""
    seq_len: int = 0
    """0: training.seq_len."""


CORE_SECTIONS: dict[str, type] = {
    "job": JobSection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "lr_scheduler": LRSchedulerSection,
    "training": TrainingSection,
    "metrics": MetricsSection,
    "checkpoint": CheckpointSection,
    "parallelism": ParallelismSection,
    "comm": CommSection,
    "launch": LaunchSection,
    "plugins": PluginsSection,
    "data": DataSection,
    "validation": ValidationSection,
}
