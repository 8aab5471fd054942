"""The hook specifications: titan's table of contents.

Read top to bottom, they are the life of a job. A plugin implements only the
hooks it needs, with ``@titan.core.hookimpl``; pluggy checks the names and
arguments of each implementation when the plugin is registered.

Phases and who takes part:

* **Registration** (every *installed* plugin, active or not, because they
  describe what exists): ``titan_register_models``, ``titan_register_backends``,
  ``titan_config_sections``, ``titan_config_aliases``, ``titan_add_commands``.
* **Validation** (active plugins): ``titan_validate_config``, before any
  process is launched.
* **Build** (active plugins, on every rank, in this fixed order whatever order
  the user listed the plugins in): ``titan_convert_model`` ->
  ``titan_apply_tensor_parallel`` -> ``titan_apply_activation_checkpointing`` ->
  ``titan_apply_compile`` -> ``titan_apply_data_parallel``. The model is still
  on the meta device during all of them; weights are materialised and
  initialised afterwards.
* **Training loop** (active plugins): ``titan_train_start``, then per step
  ``titan_step_start`` -> forward/backward (inside the context managers of
  ``titan_train_context``) -> ``titan_after_backward`` ->
  ``titan_before_optimizer_step`` -> optimizer step ->
  ``titan_after_optimizer_step`` -> ``titan_step_end``; ``titan_log_metrics``
  on rank 0 every ``metrics.log_freq`` steps; ``titan_checkpoint_state`` when a
  checkpoint is saved or loaded; ``titan_train_end``.

Build hooks change the model *in place* (swap submodules, wrap blocks,
shard parameters) and return nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pluggy

from titan.core import PROJECT_NAME

if TYPE_CHECKING:  # torch and typer stay out of import time
    import torch
    import typer

    from titan.core.config.aliases import ConfigAlias
    from titan.core.config.job import JobConfig
    from titan.core.parallel import ParallelDims
    from titan.core.registry import BackendRegistry, ModelRegistry
    from titan.core.trainer import Trainer

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --- Registration: every installed plugin ------------------------------------


@hookspec
def titan_register_models(registry: ModelRegistry) -> None:
    """Add model families and flavors to ``registry`` (see ``titan models list``)."""


@hookspec
def titan_register_backends(registry: BackendRegistry) -> None:
    """Add launch backends (``--backend NAME``) to ``registry``."""


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
def titan_validate_config(config: JobConfig, active: frozenset[str]) -> None:
    """Check the whole, merged config; raise ``titan.core.errors.ConfigError`` if unusable.

    Runs before anything is launched, so a bad combination fails on the
    user's laptop, not 20 minutes into a cluster job. ``active`` holds the
    names of all active plugins, for checks that depend on another plugin.
    """


# --- Build: active plugins, on every rank, fixed order ------------------------


@hookspec
def titan_convert_model(model: torch.nn.Module, config: JobConfig, parallel: ParallelDims) -> None:
    """Swap modules for converted ones (e.g. ``nn.Linear`` -> ``Float8Linear``). Meta device."""


@hookspec
def titan_apply_tensor_parallel(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> None:
    """Shard the model over ``parallel.mesh['tp']``. Runs after conversion."""


@hookspec
def titan_apply_activation_checkpointing(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> None:
    """Wrap transformer blocks for activation checkpointing. Runs after tensor parallel."""


@hookspec
def titan_apply_compile(model: torch.nn.Module, config: JobConfig, parallel: ParallelDims) -> None:
    """Compile the model (per block). Runs after activation checkpointing, before sharding."""


@hookspec
def titan_apply_data_parallel(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> None:
    """Shard or replicate the model across data-parallel ranks (FSDP2). Runs last."""


# --- Training loop: active plugins -------------------------------------------


@hookspec
def titan_train_start(trainer: Trainer) -> None:
    """The model, optimizer and data are built and any checkpoint is loaded."""


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


@hookspec
def titan_step_end(trainer: Trainer, step: int, metrics: dict[str, Any]) -> None:
    """The step is done. Add entries to ``metrics`` to have them logged.

    Add them on every rank alike: a step with metrics is logged even off the
    ``log_freq`` schedule, and logging reduces the loss across ranks. Avoid
    reading device tensors here on other steps (``.item()`` waits for the device).
    """


@hookspec
def titan_log_metrics(step: int, metrics: dict[str, Any], config: JobConfig) -> None:
    """Write one step's metrics somewhere (console, JSON lines, TensorBoard). Rank 0 only."""


@hookspec
def titan_checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """Return ``{name: obj}`` of extra objects to save and restore with checkpoints.

    Each ``obj`` has ``state_dict()`` and ``load_state_dict(sd)`` (torch's
    ``Stateful`` protocol); names must be unique across plugins.
    """


@hookspec
def titan_train_end(trainer: Trainer) -> None:
    """Training finished (the last checkpoint is written)."""
