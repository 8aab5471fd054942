"""Every check of a job before it runs, in one place, for every backend and every rank.

``titan run`` calls :func:`check_job` with the layout its backend gives
(``backend.layout(job, offline)``) before anything is written, uploaded,
queued or paid for; each rank calls it again (through
:func:`titan.core.launch.prepare_job`) with the layout its backend handed it
(``TITAN_LAUNCH_LAYOUT``), so a mistake found on either side reads the same.
The trainer reuses the pieces (:func:`degrees`, :func:`grad_accum_steps`,
:func:`model_args`) instead of checking again in its own words.

Torch-free: runs in the launching ``titan`` process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.core.config.eras import local_dataset_problem
from titan.core.errors import ConfigError, DoesNotFit
from titan.core.layout import GIB, LaunchLayout, resolve_degrees
from titan.core.state_memory import shards_needed, state_memory

if TYPE_CHECKING:
    from titan.core.config.job import JobConfig
    from titan.core.launch import PreparedJob

STATE_NOTE_FRACTION = 0.75
"""Above this share of a device's memory the weights, gradients and optimizer state leave
little for activations: said as a note before launch."""


def check_job(job: PreparedJob, layout: LaunchLayout) -> None:
    """All checks of ``job`` against ``layout``; raises one-line ConfigErrors. Sets ``job.layout``.

    In order: core's own keys and the model against the sequence length; the dump
    folder's state against the job (where the job writes into it as this machine
    sees it); the plugins' ``titan_configure`` (defaults that depend on the layout); the
    parallel degrees against the processes; data parallelism having a plugin; the
    batch arithmetic; every active plugin's ``titan_validate_config``; a plugin that
    builds ``optimizer.name``. Last, with
    ``job.layout`` set, whether the training state and then the step's planned
    peak (:mod:`titan.core.memory_plan`) fit the device: those raise
    :class:`~titan.core.errors.DoesNotFit`.
    """
    validate_core(job)
    c = job.config
    if layout.dump_folder_here:
        from titan.core.folders import check_folders, rerun_notes

        check_folders(c)  # before anything is built: one line, exit 2 (docs/reliability.md)
        c.notes.extend(rerun_notes(c))  # refuses a folder with nothing to train or another run
    job.plugins.hook.titan_configure(config=c, active=job.plugins.active, layout=layout)
    dp_rep, dp_shard, tp = degrees(c, layout)
    check_data_parallel(job, dp_rep * dp_shard)
    grad_accum_steps(c.training, dp_rep * dp_shard)
    args = model_args(job)
    job.plugins.hook.titan_validate_config(
        config=c, active=job.plugins.active, layout=layout, model_args=args
    )
    optimizer_bytes = optimizer_state_bytes(job)  # an active plugin builds optimizer.name
    job.layout = layout
    # Last, so that every other mistake is found first (a plan of a job that cannot start
    # means nothing; `titan plan` still plans one that only does not fit: DoesNotFit).
    _check_state_memory(job, args, layout, dp_rep, dp_shard, tp, optimizer_bytes)
    if layout.device.memory_bytes and _transformer_shapes(args):  # (see plannable)
        from titan.core.memory_plan import check_peak_memory

        check_peak_memory(job, layout)  # the step's peak, activations and logits included


def degrees(config: JobConfig, layout: LaunchLayout) -> tuple[int, int, int]:
    """``(dp_replicate, dp_shard, tp)`` of this job on ``layout``, ``dp_shard = -1`` filled in."""
    p = config.parallelism
    return resolve_degrees(
        layout.world_size,
        p.data_parallel_replicate_degree,
        p.data_parallel_shard_degree,
        p.tensor_parallel_degree,
        layout,
    )


def plannable(job: PreparedJob) -> bool:
    """Whether titan's memory and speed plans can size this job's model."""
    return _transformer_shapes(model_args(job))


def _transformer_shapes(args: Any) -> bool:
    """Whether the model's args describe a decoder transformer the memory plan can size."""
    return all(
        isinstance(getattr(args, k, None), int)
        for k in ("dim", "n_layers", "n_heads", "ffn_hidden_dim", "vocab_size")
    )


def no_data_parallel_error(ranks: int) -> ConfigError:
    return ConfigError(
        f"{ranks} data-parallel ranks, but no active plugin applies data parallelism (is "
        "'fsdp' blocked with no:fsdp?); remove no:fsdp, or run one process (--nproc 1)"
    )


def check_data_parallel(job: PreparedJob, dp_degree: int) -> None:
    """Several data-parallel ranks without a plugin that applies FSDP would train diverging copies."""
    if dp_degree > 1 and not job.plugins.hook.titan_apply_data_parallel.get_hookimpls():
        raise no_data_parallel_error(dp_degree)


def grad_accum_steps(training: Any, dp_degree: int) -> int:
    """Micro-batches per optimizer step; refuses a global batch that does not divide."""
    per_step = training.local_batch_size * dp_degree
    if training.global_batch_size in (-1, 0):
        return 1
    if training.global_batch_size % per_step:
        raise ConfigError(
            f"training.global_batch_size {training.global_batch_size} is not a multiple of "
            f"local_batch_size {training.local_batch_size} x data-parallel degree {dp_degree} "
            f"= {per_step}; change one of them"
        )
    return training.global_batch_size // per_step


def model_args(job: PreparedJob) -> Any:
    """The model's hyper-parameters: the flavor's, with ``model.vocab_size`` applied, checked
    against ``training.seq_len``."""
    c = job.config
    args = job.models.get(c.model.name).flavor(c.model.flavor)
    if c.model.vocab_size and hasattr(args, "with_vocab"):
        args = args.with_vocab(c.model.vocab_size)
    max_seq_len = getattr(args, "max_seq_len", None)
    if isinstance(max_seq_len, int) and c.training.seq_len > max_seq_len > 0:
        raise ConfigError(
            f"training.seq_len {c.training.seq_len} exceeds the model's max_seq_len "
            f"{max_seq_len} ({c.model.name}/{c.model.flavor}); lower training.seq_len"
        )
    return args


def optimizer_state_bytes(job: PreparedJob) -> float:
    """Optimizer state per parameter, from the active plugin that builds ``optimizer.name``."""
    name = job.config.optimizer.name
    answer = job.plugins.hook.titan_optimizer_state_bytes(config=job.config)
    if answer is None:
        inactive = sorted(
            plugin
            for plugin, bytes_ in job.plugins.call_each(
                "titan_optimizer_state_bytes", installed=True, config=job.config
            )
            if bytes_ is not None and plugin not in job.plugins.active
        )
        if inactive:
            raise ConfigError(
                f"optimizer '{name}' is built by plugin '{inactive[0]}', which is not active; "
                f"add --plugins {inactive[0]}"
            )
        raise ConfigError(
            f"no active plugin builds optimizer '{name}' (built in: AdamW, Adam); set "
            "--optimizer.name=AdamW, or install and enable (--plugins) the plugin that provides it"
        )
    return float(answer)


def _check_state_memory(
    job: PreparedJob,
    args: Any,
    layout: LaunchLayout,
    dp_rep: int,
    dp_shard: int,
    tp: int,
    optimizer_bytes: float,
) -> None:
    """Weights, gradients and optimizer state per device against the device's memory."""
    memory = layout.device.memory_bytes
    if not memory:
        return
    from titan.core.model_info import count_parameters

    c = job.config
    family = job.models.get(c.model.name)
    if not family.parameter_count:
        return  # counting would build the model on meta (torch): the ranks find out instead
    n = count_parameters(family, args)
    shards = dp_shard * tp
    state = state_memory(n, shards, optimizer_bytes)
    what = (
        f"{c.model.name}/{c.model.flavor} ({n / 1e9:.2f}B parameters) with {c.optimizer.name} "
        f"needs {state.bytes_per_parameter} bytes per parameter (float32 weights, gradients "
        f"and optimizer state): {state.total / GIB:.1f} GiB per device with the state split "
        f"{shards} way(s)"
    )
    d = layout.device
    device = f"each process has {memory / GIB:.1f} GiB ({d.model or d.kind}; {layout.where})"
    if state.total <= memory:
        if state.total > STATE_NOTE_FRACTION * memory:
            c.notes.append(
                f"{what}, of {device}: little is left for activations (ac, tp or more nodes help)"
            )
        return
    fix = _fits_with(job, n, layout, dp_rep, shards, optimizer_bytes)
    raise DoesNotFit(f"model state does not fit: {what}, but {device}; {fix}")


def _fits_with(
    job: PreparedJob, n: int, layout: LaunchLayout, dp_rep: int, shards: int, optimizer_bytes: float
) -> str:
    """The smallest change that makes the state fit: shard instead of replicate, or more nodes."""
    memory = layout.device.memory_bytes or 1
    need = shards_needed(n, memory, optimizer_bytes)
    if dp_rep > 1 and shards * dp_rep >= need:
        return (
            f"shard over all {shards * dp_rep} processes instead of replicating "
            "(--parallelism.data_parallel_replicate_degree=1)"
        )
    if layout.nodes_option:
        nodes = -(-need // layout.procs_per_node)
        shard_note = (
            ""
            if job.config.parallelism.data_parallel_shard_degree == -1
            else " with --parallelism.data_parallel_shard_degree=-1"
        )
        return (
            f"it needs at least {need} devices of this kind: "
            f"{layout.nodes_option.format(n=nodes)}{shard_note}, or a smaller model"
        )
    return f"it needs at least {need} devices of this kind; use a smaller model or larger devices"


def validate_core(job: PreparedJob) -> None:
    """Checks of core's own sections that need no layout."""
    c = job.config
    model_args(job)  # unknown model or flavor, seq_len above the model's
    if not c.job.dump_folder.strip():
        raise ConfigError(
            "config key 'job.dump_folder' is empty (it would write into the current folder); "
            "name a folder, e.g. --job.dump_folder=./outputs"
        )
    positive = {
        "training.steps": c.training.steps,
        "training.local_batch_size": c.training.local_batch_size,
        "training.seq_len": c.training.seq_len,
        "metrics.log_freq": c.metrics.log_freq,
        "checkpoint.interval": c.checkpoint.interval,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {value}")
    if c.optimizer.lr <= 0:
        raise ConfigError(f"config key 'optimizer.lr' must be positive, got {c.optimizer.lr}")
    if c.lr_scheduler.warmup_steps < 0:
        raise ConfigError("config key 'lr_scheduler.warmup_steps' must be 0 or more")
    if c.model.tokenizer_path and not Path(c.model.tokenizer_path).exists():
        key = "model.tokenizer_path"
        if c.model.tokenizer_path == c.model.hf_assets_path:
            key = "model.hf_assets_path"
        raise ConfigError(
            f"tokenizer file '{c.model.tokenizer_path}' ({key}) does not exist; "
            "fix the path or leave it empty for the bundled tokenizer"
        )
    problem = local_dataset_problem(c.training.dataset, c.training.dataset_path)
    if problem and not c.data.sources:
        raise ConfigError(problem)
    for degree in ("data_parallel_replicate_degree", "tensor_parallel_degree"):
        if getattr(c.parallelism, degree) < 1:
            raise ConfigError(f"config key 'parallelism.{degree}' must be 1 or more")


def check_files_here(job: PreparedJob) -> None:
    """Checks that read this machine's files, for backends whose ranks run on this machine.

    The tokenizer (readable, and no larger than the model's vocabulary), the
    initial checkpoint folder and the data: each would otherwise fail in every
    rank after the process group and, for the data, the model are built.
    """
    from titan.core.data.loader import check_data_here

    c = job.config
    check_tokenizer(job, model_args(job))
    initial = c.checkpoint.initial_load_path
    if initial and not (Path(initial) / ".metadata").is_file():
        what = "does not exist" if not Path(initial).exists() else "is not a checkpoint folder"
        raise ConfigError(
            f"checkpoint.initial_load_path '{initial}' {what} (no .metadata in it); point it at "
            "a folder written by `titan convert hf-to-titan` or a <dump>/checkpoint/step-N"
        )
    _check_load_step(c)
    check_data_here(c)


def check_tokenizer(job: PreparedJob, args: Any, tokenizer: Any = None) -> Any:
    """The tokenizer loads and fits the model's vocabulary; returns it (the trainer keeps it)."""
    from titan.core.tokenizers import check_vocab_size, load_tokenizer

    c = job.config
    tokenizer = tokenizer or load_tokenizer(c.model.tokenizer_path)
    vocab = getattr(args, "vocab_size", None)
    if isinstance(vocab, int):
        check_vocab_size(tokenizer, vocab, f"{c.model.name}/{c.model.flavor}")
    return tokenizer


def _check_load_step(c: JobConfig) -> None:
    """``checkpoint.load_step`` names a checkpoint that exists (the ranks would find out late).

    Listed with :func:`titan.core.folders.saved_steps`, without importing torch.
    """
    from titan.core.folders import saved_steps

    ck = c.checkpoint
    if not ck.enable_checkpoint or ck.load_step in (-1, 0):
        return
    folder = Path(c.job.dump_folder) / ck.folder
    steps = saved_steps(folder)
    if not steps:
        raise ConfigError(
            f"checkpoint.load_step is {ck.load_step} but '{folder}' holds no complete "
            "checkpoint; set checkpoint.load_step = -1 or fix checkpoint.folder"
        )
    if ck.load_step not in steps:
        raise ConfigError(
            f"no complete checkpoint for step {ck.load_step} in '{folder}' (have: "
            f"{', '.join(map(str, steps))}); set checkpoint.load_step"
        )
