"""From command-line arguments to a validated job, ready for a backend.

This is the torch-free half of a run: discover plugins, build the config
schema from every installed plugin, load the TOML and overrides, activate
plugins, validate the whole config. Backends then launch
``python -m titan.core.train <dump_folder>/job_config.toml`` on each rank,
which repeats these steps from that file and trains.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from titan.core.config.aliases import CORE_ALIASES, ConfigAlias
from titan.core.config.job import JobConfig, load_config
from titan.core.config.sections import CORE_SECTIONS
from titan.core.errors import ConfigError, PluginError
from titan.core.plugins import PluginHost, load_plugins
from titan.core.registry import BackendRegistry, ModelRegistry

CONFIG_FILE_NAME = "job_config.toml"
NEXT_CONFIG_FILE_NAME = "job_config.next.toml"


@dataclass
class Job:
    """Everything a backend needs to launch, and a rank needs to train."""

    config: JobConfig
    plugins: PluginHost
    models: ModelRegistry
    backends: BackendRegistry
    config_file: Path | None = None
    """The TOML file this job was read from (a rank's ``job_config[.next].toml``)."""

    @property
    def dump_folder(self) -> Path:
        return Path(self.config.job.dump_folder)

    def active_sections(self) -> list[str]:
        """Core sections plus those of active plugins (what `config show` prints)."""
        owned = self.section_owners()
        return [s for s in self.config.sections if owned.get(s) in (None, *self.plugins.active)]

    def section_owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for name in self.plugins.infos:
            impl = getattr(self.plugins.module(name), "titan_config_sections", None)
            for section in (impl() or {}) if impl else {}:
                owners[section] = name
        return owners

    def effective_toml(self) -> str:
        """The merged config with the active opt-in plugins in ``[plugins] enabled``."""
        opt_in = sorted(n for n in self.plugins.active if not self.plugins.infos[n].autoload)
        blocked = sorted(
            f"no:{n}"
            for n, i in self.plugins.infos.items()
            if i.autoload and n not in self.plugins.active
        )
        self.config.plugins.enabled = [*opt_in, *blocked]
        return self.config.to_toml(self.active_sections())

    def write_config(self) -> Path:
        """Write the effective config where every rank (and a resume) can read it; its path.

        An existing ``job_config.toml`` with other content is not replaced yet:
        the new config goes to ``job_config.next.toml``, which rank 0 copies over
        ``job_config.toml`` once the model is built (:func:`promote_config`). A
        run that fails validation on the ranks thus leaves the folder's config,
        which ``titan convert`` reads, as it was.
        """
        from titan.core.secrets import redact

        self.dump_folder.mkdir(parents=True, exist_ok=True)
        text = redact(self.effective_toml())
        path = self.dump_folder / CONFIG_FILE_NAME
        if path.is_file() and path.read_text() != text:
            path = self.dump_folder / NEXT_CONFIG_FILE_NAME
        _write_atomically(path, text)
        return path

    def train_command(self, config_path: Path) -> list[str]:
        return [sys.executable, "-m", "titan.core.train", str(config_path)]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def promote_config(job: Job) -> None:
    """After the model is built (the config is valid): ``job_config.next.toml`` -> ``job_config.toml``.

    Copied, not moved: a scheduler that restarts the job (Slurm requeue) may
    start it again with the ``.next`` path.
    """
    src = job.config_file
    if src is None or src.name != NEXT_CONFIG_FILE_NAME or not src.is_file():
        return
    _write_atomically(src.with_name(CONFIG_FILE_NAME), src.read_text())


def collect_schema(host: PluginHost) -> tuple[dict[str, type], list[ConfigAlias]]:
    schema: dict[str, type] = dict(CORE_SECTIONS)
    for contributed, plugin in _with_owner(host, "titan_config_sections"):
        for section, cls in (contributed or {}).items():
            if section in schema:
                raise PluginError(
                    f"plugin '{plugin}' declares config section [{section}], which already exists; "
                    "rename the plugin's section"
                )
            schema[section] = cls
    aliases = list(CORE_ALIASES)
    for contributed, _ in _with_owner(host, "titan_config_aliases"):
        aliases.extend(contributed or [])
    return schema, aliases


def _with_owner(host: PluginHost, hook: str) -> list[tuple[object, str]]:
    out = []
    for name in host.infos:
        impl = getattr(host.module(name), hook, None)
        if impl is not None:
            out.append((impl(), name))
    return out


def prepare_job(
    config_path: Path | None,
    plugins: Iterable[str] = (),
    overrides: Iterable[tuple[str, str]] = (),
    validate: bool = True,
) -> Job:
    """Discover plugins, load and validate the config: everything short of launching."""
    host = load_plugins()
    schema, aliases = collect_schema(host)
    config = load_config(config_path, overrides, schema, aliases)
    host.activate([*config.requested_plugins, *plugins])
    _activate_tensor_parallel(host, config, [*config.requested_plugins, *plugins])
    models, backends = ModelRegistry(), BackendRegistry()
    host.pm.hook.titan_register_models(registry=models)
    host.pm.hook.titan_register_backends(registry=backends)
    job = Job(config=config, plugins=host, models=models, backends=backends)
    job.config_file = config_path
    if validate:
        validate_core(job)
        host.hook.titan_validate_config(config=config, active=host.active)
    return job


def _activate_tensor_parallel(host: PluginHost, config: JobConfig, requested: list[str]) -> None:
    """``tensor_parallel_degree > 1`` activates the installed plugin that applies TP.

    As in torchtitan, the degree alone switches tensor parallelism on. Without
    this, the ranks of the tp dimension would silently train identical copies.
    """
    degree = config.parallelism.tensor_parallel_degree
    if degree <= 1 or host.hook.titan_apply_tensor_parallel.get_hookimpls():
        return
    providers = sorted(
        {i.plugin_name for i in host.pm.hook.titan_apply_tensor_parallel.get_hookimpls()}
    )
    if len(providers) != 1:
        raise PluginError(
            f"parallelism.tensor_parallel_degree is {degree} but no active plugin applies tensor "
            f"parallelism; activate one of: {', '.join(providers) or 'none installed'} (--plugins)"
        )
    if f"no:{providers[0]}" in requested:
        raise PluginError(
            f"parallelism.tensor_parallel_degree is {degree} but plugin '{providers[0]}', which "
            f"applies tensor parallelism, is blocked (no:{providers[0]}); set the degree to 1 "
            "or unblock the plugin"
        )
    host.activate([*requested, providers[0]])
    host.notes.append(f"parallelism.tensor_parallel_degree = {degree} -> plugin '{providers[0]}'")


def validate_core(job: Job) -> None:
    """Checks of core's own sections, before any process starts."""
    c = job.config
    family = job.models.get(c.model.name)
    family.flavor(c.model.flavor)
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
        raise ConfigError(
            f"tokenizer file '{c.model.tokenizer_path}' (model.tokenizer_path) does not exist; "
            "fix the path or leave it empty for the bundled tokenizer"
        )
    for degree in ("data_parallel_replicate_degree", "tensor_parallel_degree"):
        if getattr(c.parallelism, degree) < 1:
            raise ConfigError(f"config key 'parallelism.{degree}' must be 1 or more")
    from titan.core.folders import check_folders, rerun_notes

    check_folders(c)  # before anything is built: one line, exit 2 (docs/reliability.md)
    c.notes.extend(rerun_notes(c))
