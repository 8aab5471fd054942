"""From command-line arguments to a job, and the job's config file.

This is the torch-free half of a run: discover plugins, build the config
schema from every installed plugin, load the TOML and overrides, activate
plugins. The checks live in :mod:`titan.core.checks` and the launch layout
in :mod:`titan.core.layout`; ``titan run`` checks the job against its
backend's layout, then the backend launches
``python -m titan.core.train <dump_folder>/job_config.toml`` on each rank,
which repeats these steps from that file (checking against the same layout)
and trains.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from titan.core.config.aliases import CORE_ALIASES, ConfigAlias
from titan.core.config.job import JobConfig, load_config
from titan.core.config.sections import CORE_SECTIONS
from titan.core.errors import PluginError
from titan.core.layout import LaunchLayout, rank_layout
from titan.core.plugins import PluginHost, load_plugins
from titan.core.registry import BackendRegistry, ModelRegistry

CONFIG_FILE_NAME = "job_config.toml"
NEXT_CONFIG_FILE_NAME = "job_config.next.toml"


@dataclass
class PreparedJob:
    """A job as titan prepared it: everything a backend needs to launch, and a rank to train.

    Of titan's "job" words this is the in-memory one. Its settings are a
    :class:`~titan.core.config.job.JobConfig` (whose ``[job]`` section is
    torchtitan's: dump folder, description); a job submitted to a cluster is
    remembered as a :class:`~titan.core.jobs.JobRecord` (``titan jobs``).
    """

    config: JobConfig
    plugins: PluginHost
    models: ModelRegistry
    backends: BackendRegistry
    config_file: Path | None = None
    """The TOML file this job was read from (a rank's ``job_config[.next].toml``)."""
    layout: LaunchLayout | None = None
    """Where it runs, once checked against it (:func:`titan.core.checks.check_job`)."""

    @property
    def dump_folder(self) -> Path:
        return Path(self.config.job.dump_folder)

    def active_sections(self) -> list[str]:
        """What `config show` prints: core sections, active plugins' sections, and sections
        of inactive plugins that the file or the overrides set (so no key is silently lost)."""
        owned = self.section_owners()
        return [
            s
            for s, body in self.config.sections.items()
            if owned.get(s) in (None, *self.plugins.active) or _differs_from_default(body)
        ]

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


def _differs_from_default(section: object) -> bool:
    try:
        return section != type(section)()
    except TypeError:  # a section class without defaults for every key: show it
        return True


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def promote_config(job: PreparedJob) -> None:
    """After the model is built (the config is valid): ``job_config.next.toml`` -> ``job_config.toml``.

    Copied, not moved: a scheduler that restarts the job (Slurm requeue) may
    start it again with the ``.next`` path.
    """
    src = job.config_file
    if src is None or src.name != NEXT_CONFIG_FILE_NAME or not src.is_file():
        return
    _write_atomically(src.with_name(CONFIG_FILE_NAME), src.read_text())


def discard_unpromoted_config(job: PreparedJob) -> None:
    """A run that failed before :func:`promote_config` leaves no ``job_config.next.toml`` behind.

    (After the promotion the file stays: a restarted attempt is started with its path.)

    Rank 0 only (every rank has read the file by then); the folder's
    ``job_config.toml`` is then exactly as before the failed attempt.
    """
    src = job.config_file
    if src is None or src.name != NEXT_CONFIG_FILE_NAME or os.environ.get("RANK", "0") != "0":
        return
    current = src.with_name(CONFIG_FILE_NAME)
    if src.is_file() and current.is_file() and current.read_text() == src.read_text():
        return  # promoted: a restart (torchrun --max-restarts, a requeue) starts from it again
    src.unlink(missing_ok=True)


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
    layout: LaunchLayout | None = None,
) -> PreparedJob:
    """Discover plugins, load the config and, with ``validate``, check the job.

    It is checked against ``layout``, by default this process's
    (:func:`titan.core.layout.rank_layout`: what the backend handed the
    ranks, else torchrun's environment, else ``[launch]``). ``titan run``
    passes ``validate=False`` and checks against its backend's layout itself.
    """
    host = load_plugins()
    schema, aliases = collect_schema(host)
    overrides = list(overrides)
    config = load_config(config_path, overrides, schema, aliases)
    _check_config_plugin_names(host, config, overrides)
    host.activate([*config.requested_plugins, *plugins])
    _activate_tensor_parallel(host, config, [*config.requested_plugins, *plugins])
    models, backends = ModelRegistry(), BackendRegistry()
    host.pm.hook.titan_register_models(registry=models)
    host.pm.hook.titan_register_backends(registry=backends)
    from titan.core.data.sources import DATA_SOURCES

    host.pm.hook.titan_register_data_sources(registry=DATA_SOURCES)
    job = PreparedJob(config=config, plugins=host, models=models, backends=backends)
    job.config_file = config_path
    if validate:
        from titan.core.checks import check_job

        launch = config.launch
        check_job(job, layout or rank_layout(launch.nproc_per_node, launch.nnodes))
    return job


def _check_config_plugin_names(
    host: PluginHost, config: JobConfig, overrides: list[tuple[str, str]]
) -> None:
    """An unknown name in ``[plugins] enabled`` is fixed in the file (or override), not --plugins."""
    if "plugins" not in config:
        return
    from_cli = any(key == "plugins.enabled" for key, _ in overrides)
    where = (
        "--plugins.enabled"
        if from_cli or config.source is None
        else (f"[plugins] enabled of {config.source}")
    )
    for name in config.plugins.enabled:
        bare = name.strip().removeprefix("no:")
        if bare and bare not in host.infos:
            close = difflib.get_close_matches(bare, list(host.infos), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PluginError(
                f"unknown plugin '{bare}' in {where}{hint}; available plugins: "
                f"{', '.join(sorted(host.infos))} (fix the name there, or install a package "
                "that provides it)"
            )


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


Job = PreparedJob
"""The name of plugin API 1.1 and before; new code says :class:`PreparedJob`."""
