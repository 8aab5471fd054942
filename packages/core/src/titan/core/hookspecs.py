"""The hook specifications: titan's table of contents.

Read top to bottom, they are the life of a job. A plugin implements only the
hooks it needs, with ``@titan.core.hookimpl``; pluggy checks the names and
arguments of each implementation when the plugin is registered.

Phases and who takes part:

* **Registration** (every *installed* plugin, active or not, because they
  describe what exists): ``titan_register_models``, ``titan_register_backends``,
  ``titan_register_data_sources``,
  ``titan_config_sections``, ``titan_config_aliases``, ``titan_add_commands``.
* **Configure, then validate** (active plugins), before any process is
  launched: ``titan_configure`` fills in defaults that depend on the launch
  layout, then ``titan_validate_config`` only checks.
* **Build** (active plugins, on every rank, in this fixed order whatever order
  the user listed the plugins in): ``titan_convert_model`` ->
  ``titan_apply_tensor_parallel`` -> ``titan_apply_activation_checkpointing`` ->
  ``titan_apply_compile`` -> ``titan_apply_data_parallel``. The model is still
  on the meta device during all of them; weights are materialised and
  initialised afterwards.
* **Optimizer** (active plugins): ``titan_optimizer_state_bytes`` before launch
  (which plugin builds ``optimizer.name``, and its state's size for the memory
  checks), ``titan_build_optimizer`` on every rank after the build.
* **Training loop** (active plugins): ``titan_train_start``, then per step
  ``titan_step_start`` -> per micro-batch: forward, ``titan_loss`` /
  ``titan_loss_terms``, backward (inside the context managers of
  ``titan_train_context``) -> ``titan_after_backward`` ->
  ``titan_before_optimizer_step`` -> optimizer step ->
  ``titan_after_optimizer_step`` -> ``titan_step_end``; ``titan_log_metrics``
  on rank 0 every ``metrics.log_freq`` steps; ``titan_train_end``.
* **Checkpoints** (active plugins): ``titan_checkpoint_state`` once,
  after the model, optimizer and step were restored from a checkpoint (or
  initialised, on a fresh run) and before ``titan_train_start``;
  ``titan_checkpoint_saved`` on every rank each time a checkpoint is complete
  and published.

Build hooks change the model *in place* (swap submodules, wrap blocks,
shard parameters) and return nothing. Each also receives ``loss``, the
:class:`~titan.core.loss_function.LossFunction` titan will compute the loss
with: a plugin whose technique changes how the loss is computed wraps it there
(``loss.wrap(lambda fn: ...)``; tensor parallel's loss parallel, compile), so
the wrappers nest in the phases' fixed order. A hook may leave ``loss`` out of
its arguments.

What a training hook may use of the ``trainer`` it receives is listed in
:data:`TRAINER_API`; that list, the hook names and their arguments are
versioned together by :data:`PLUGIN_API_VERSION`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pluggy

from titan.core import PROJECT_NAME

if TYPE_CHECKING:  # torch and typer stay out of import time
    from pathlib import Path

    import torch
    import typer

    from titan.core.config.aliases import ConfigAlias
    from titan.core.config.job import JobConfig
    from titan.core.data.sources import DataSourceRegistry
    from titan.core.layout import LaunchLayout
    from titan.core.loss_function import LossFunction
    from titan.core.parallel import ParallelDims
    from titan.core.registry import BackendRegistry, ModelRegistry
    from titan.core.trainer import Trainer

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

PLUGIN_API_VERSION = (1, 4)
"""(major, minor) of the plugin API: these hooks plus :data:`TRAINER_API`.

The minor number grows when something is added (a hook, an argument, a
trainer attribute); the major number when something a plugin may rely on
changes or goes away. A plugin can check it at import time:
``assert titan.core.hookspecs.PLUGIN_API_VERSION[0] == 1``.
"""

TRAINER_API: dict[str, str] = {
    "config": "the merged JobConfig; a plugin's own section is config.<section> (read-only)",
    "model": "the built nn.Module (after every build hook; FSDP/TP-wrapped, maybe compiled)",
    "optimizer": "the torch optimizer over model.parameters()",
    "lr_scheduler": "the LR scheduler (get_last_lr()[0] is the current LR)",
    "parallel": "ParallelDims: rank, world_size, dp_rank, dp_degree, tp, mesh, is_main",
    "device": "the torch.device this rank computes on",
    "dump_folder": "Path of job.dump_folder: where this run writes its files",
    "step": "the current step (1-based inside a step; the last finished step outside)",
    "grad_accum_steps": "micro-batches per optimizer step",
    "tokenizer": "the tokenizer (encode/decode, vocab_size, bos_id, eos_id)",
    "autocast()": "the context for a forward pass in the run's compute dtype",
    "train_context()": "an ExitStack entering every plugin's titan_train_context managers",
    "cross_entropy(logits, labels)": "titan's default loss (mean over tokens, TP-aware)",
    "model_args": "the model's hyper-parameters (its flavor, with model.vocab_size applied)",
    "first_step": "the first step this process trained (1, or the step after the one resumed)",
    "first_loss": "that step's loss (mean over ranks), once read; None before",
    "last_loss": "the last logged step's loss (mean over ranks); None before",
}
"""The stable, plugin-facing surface of :class:`titan.core.trainer.Trainer`.

Anything else on the trainer is internal and may change without notice.
Stop a run on purpose by raising ``titan.core.errors.PluginError`` (or
another ``TitanError``) with a message naming the problem and the fix: the
user sees that one line and exit code 2.
"""


# --- Registration: every installed plugin ------------------------------------


@hookspec
def titan_register_models(registry: ModelRegistry) -> None:
    """Add model families and flavors to ``registry`` (see ``titan models list``)."""


@hookspec
def titan_register_backends(registry: BackendRegistry) -> None:
    """Add launch backends (``--backend NAME``) to ``registry``."""


@hookspec
def titan_register_data_sources(registry: DataSourceRegistry) -> None:
    """Add source-string prefixes (``registry.add("sm-channel:", resolve)``) for datasets.

    ``resolve(rest)`` returns what the prefixed string stands for in this
    process: a local path, a URL or a Hugging Face Hub name (the SageMaker
    backend turns ``sm-channel:train`` into the channel's folder in the
    container). Called when a job is prepared, in the launching process and
    on every rank.
    """


@hookspec
def titan_config_sections() -> dict[str, type]:
    """Return ``{section_name: dataclass}`` for the config sections this plugin owns.

    Each dataclass field is a key of that TOML section, typed; its default is
    the default value. Sections of inactive plugins are still accepted in a
    config file, so one TOML can serve runs with and without a plugin.
    """


@hookspec
def titan_config_aliases() -> list[ConfigAlias]:
    """Return torchtitan-style keys this plugin understands (see docs/torchtitan.md).

    An alias maps an old ``section.key`` onto a titan key, or activates a
    plugin when its value is true (``training.compile = true`` -> ``compile``).
    """


@hookspec
def titan_add_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``titan`` command line (e.g. ``titan convert``).

    Import heavy libraries inside the command functions, not at module level:
    ``titan --help`` must stay fast and torch-free.
    """


# --- Validation: active plugins, before launch -------------------------------


@hookspec
def titan_configure(config: JobConfig, active: frozenset[str], layout: LaunchLayout) -> None:
    """Fill in defaults that depend on the launch, before any check (the configure phase).

    The one phase that may change the config: e.g. the ``tp`` plugin, active with no
    degree given, sets ``parallelism.tensor_parallel_degree`` to the processes of a node.
    Runs for every backend before anything is launched, against the job's ``layout``;
    what it writes is in the config the ranks read (they run it again, and find nothing
    left to fill in). Add a line to ``config.notes`` saying what was filled in and how to
    choose otherwise. Raise ``ConfigError`` when no default works.
    """


@hookspec
def titan_validate_config(
    config: JobConfig, active: frozenset[str], layout: LaunchLayout, model_args: Any
) -> None:
    """Check the whole, merged config; raise ``titan.core.errors.ConfigError`` if unusable.

    Runs before anything is launched, for every backend, so a bad
    combination fails on the user's laptop, not 20 minutes into a cluster
    job; each rank runs it again against the same layout. ``active`` holds
    the names of all active plugins, for checks that depend on another
    plugin. ``layout`` is the job's :class:`~titan.core.layout.LaunchLayout`
    (nodes, processes per node, their device: model, memory, float8);
    ``config.parallelism`` already holds the resolved tensor-parallel degree
    and :func:`titan.core.checks.degrees` gives all three. ``model_args`` are
    the model's hyper-parameters (its flavor, with ``model.vocab_size``
    applied). A hook may take any subset of these arguments. It only checks:
    it must not change the config.
    """


# --- Build: active plugins, on every rank, fixed order ------------------------


@hookspec
def titan_convert_model(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims, loss: LossFunction
) -> None:
    """Swap modules for converted ones (e.g. ``nn.Linear`` -> ``Float8Linear``). Meta device."""


@hookspec
def titan_apply_tensor_parallel(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims, loss: LossFunction
) -> None:
    """Shard the model over ``parallel.mesh['tp']``. Runs after conversion."""


@hookspec
def titan_apply_activation_checkpointing(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims, loss: LossFunction
) -> None:
    """Wrap transformer blocks for activation checkpointing. Runs after tensor parallel."""


@hookspec
def titan_apply_compile(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims, loss: LossFunction
) -> None:
    """Compile the model (per block). Runs after activation checkpointing, before sharding."""


@hookspec
def titan_apply_data_parallel(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims, loss: LossFunction
) -> None:
    """Shard or replicate the model across data-parallel ranks (FSDP2). Runs last."""


# --- Optimizer: active plugins --------------------------------------------------


@hookspec(firstresult=True)
def titan_optimizer_state_bytes(config: JobConfig) -> float | None:
    """Bytes of optimizer state per parameter for ``config.optimizer.name``, or ``None``.

    Answer only for the optimizer names your plugin builds (``None`` for the others):
    titan asks before anything launches, both to refuse a name no active plugin builds
    (one line, exit 2) and to count the optimizer state in the memory checks and
    ``titan plan``. AdamW and Adam (two float32 tensors per parameter: 8) are answered by
    the built-in ``optimizer`` plugin; a low-bit AdamW with 8-bit states answers about 2.
    """


@hookspec(firstresult=True)
def titan_build_optimizer(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> torch.optim.Optimizer | None:
    """Build the optimizer over ``model.parameters()`` for ``config.optimizer.name``.

    Called once on every rank after the build hooks and the weights' initialisation
    (``model`` is FSDP/TP-wrapped, its parameters are on the device, DTensors when
    sharded), before the LR scheduler is made and any checkpoint is loaded (titan loads the
    optimizer's state into what this returns, through torch's distributed state-dict API,
    so the optimizer's ``state_dict`` must follow torch's layout). Return ``None`` for a
    name your plugin does not build; the first answer wins, and the built-in plugin
    answers last. ``config.optimizer`` holds ``lr``, ``eps``, ``beta1``, ``beta2``,
    ``weight_decay`` and ``implementation``; a plugin's own settings go in its own section.
    """


# --- Training loop: active plugins -------------------------------------------


@hookspec
def titan_train_start(trainer: Trainer) -> None:
    """The model, optimizer and data are built, any checkpoint is loaded, plugins' state too."""


@hookspec
def titan_train_context(trainer: Trainer) -> list[contextlib.AbstractContextManager] | None:
    """Return context managers to wrap each forward+backward in (e.g. torch's ``loss_parallel``)."""


@hookspec
def titan_step_start(trainer: Trainer, step: int) -> None:
    """A training step (1-based) is about to run its first forward pass."""


@hookspec
def titan_after_backward(trainer: Trainer, step: int) -> None:
    """Gradients for the step are accumulated; nothing is clipped yet."""


@hookspec
def titan_before_optimizer_step(trainer: Trainer, step: int) -> None:
    """Gradients are clipped; the optimizer is about to step."""


@hookspec
def titan_after_optimizer_step(trainer: Trainer, step: int) -> None:
    """The optimizer and LR scheduler stepped (fp8 all-gather precomputes scales here)."""


@hookspec(firstresult=True)
def titan_loss(trainer: Trainer, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Replace titan's cross-entropy for one micro-batch (label smoothing, distillation).

    ``logits`` are ``[batch, seq, vocab]`` as the model returned them (under
    tensor parallel with ``tp.loss_parallel``, a DTensor sharded over the
    vocabulary; titan calls this inside the ``titan_train_context``
    managers, so ``torch.nn.functional.cross_entropy`` works on it),
    ``labels`` ``[batch, seq]``. Return the *mean over this micro-batch's
    tokens*; titan divides by the number of micro-batches for gradient
    accumulation. The first plugin to return a tensor wins; return ``None``
    to keep the default (``trainer.cross_entropy``).
    """


@hookspec
def titan_loss_terms(
    trainer: Trainer, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor
) -> dict[str, torch.Tensor] | None:
    """Return ``{name: scalar tensor}`` to *add* to the loss of one micro-batch (z-loss, aux losses).

    ``loss`` is the base loss (cross-entropy, or what ``titan_loss``
    returned). Each term must be a mean over this micro-batch's tokens, like
    the loss; titan adds the terms, divides the sum by the number of
    micro-batches and backpropagates it, and reports each term's step mean
    (detached) to ``titan_step_end`` and the logs as ``metrics[name]``. A
    term computed from vocabulary-sharded DTensor logits (TP loss parallel)
    is gathered to a plain tensor by titan. Term names must be unique
    across plugins and must not be a core metric name.
    """


@hookspec
def titan_step_end(trainer: Trainer, step: int, metrics: dict[str, Any]) -> None:
    """The step is done. ``metrics`` already holds the step's numbers; add entries to log them.

    Filled in by titan: ``loss`` (this rank's mean loss over the step's
    micro-batches, loss terms included), ``grad_norm`` (the global gradient
    norm before clipping, equal on all ranks), each loss term by name (this
    rank's step mean) as 0-dim tensors *on the device*, and ``lr`` (float).
    Reading a tensor as a Python number (``float()``, ``.item()``, a
    comparison in an ``if``) waits for the GPU: do it only on the steps you
    need it (e.g. ``step % config.metrics.log_freq == 0``), or keep tensors.
    On logged steps titan turns tensors into floats, and ``loss`` into the
    mean over data-parallel ranks, before ``titan_log_metrics``. Any entry a
    plugin adds makes the step a logged one.
    Add entries on every rank alike: a step with added metrics is logged even
    off the ``log_freq`` schedule, and logging reduces the loss across ranks.
    """


@hookspec
def titan_log_metrics(step: int, metrics: dict[str, Any], config: JobConfig) -> None:
    """Write one step's metrics somewhere (console, JSON lines, TensorBoard). Rank 0 only."""


@hookspec
def titan_checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """Return ``{name: obj}`` of objects to save with every checkpoint and restore on resume.

    Called once per run, on every rank, *after* the model, optimizer and step
    were restored from the checkpoint being resumed (or initialised, on a
    fresh run) and before ``titan_train_start``: state built here from
    ``trainer.model`` starts from the resumed weights. Then titan loads each
    object's saved state into it with ``load_state_dict(sd)`` if the
    checkpoint has one; if not (a fresh run, or the plugin was added to a
    resumed run) the object keeps what it was built with. At every save
    titan calls ``state_dict()`` on *these* objects: keep them and change
    their contents; an object created later is never saved. Each ``obj``
    follows torch's ``Stateful`` protocol; its state dict holds tensors (sharded DTensors
    are resharded on load) and plain numbers/strings. Names must be unique across plugins.
    """


@hookspec
def titan_checkpoint_saved(trainer: Trainer, step: int, path: Path) -> None:
    """Checkpoint ``step`` is complete and published at ``path`` (mirror it, upload it).

    Called on every rank that wrote it (all ranks: a DCP checkpoint is written by every
    rank), after the folder was renamed from ``step-<N>.tmp`` to ``step-<N>`` and made
    durable, so every file in ``path`` is final. A synchronous save (the last one of a
    run, or a save before a requested stop) calls it before the step ends; an asynchronous
    one (``checkpoint.async_mode = "async"``) when the trainer next waits for its write: at
    the next save, a stop, or the end of the run. Uploading from every rank duplicates the
    work: copy from one rank per node (``trainer.parallel``), or from rank 0 on a shared
    file system. An exception here stops the run like a failed save; the checkpoint itself
    stays complete.
    """


@hookspec
def titan_train_end(trainer: Trainer) -> None:
    """Training finished (the last checkpoint is written)."""
