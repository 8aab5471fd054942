"""From command-line arguments to a validated job, ready for a backend.

This is the torch-free half of a run: discover plugins, build the config
schema from every installed plugin, load the TOML and overrides, activate
plugins, validate the whole config. Backends then launch
``python -m titan.core.train <dump_folder>/job_config.toml`` on each rank,
which repeats these steps from that file and trains.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from titan.core.config.aliases import CORE_ALIASES, ConfigAlias
from titan.core.config.eras import local_dataset_problem
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


def promote_config(job: Job) -> None:
    """After the model is built (the config is valid): ``job_config.next.toml`` -> ``job_config.toml``.

    Copied, not moved: a scheduler that restarts the job (Slurm requeue) may
    start it again with the ``.next`` path.
    """
    src = job.config_file
    if src is None or src.name != NEXT_CONFIG_FILE_NAME or not src.is_file():
        return
    _write_atomically(src.with_name(CONFIG_FILE_NAME), src.read_text())


def discard_unpromoted_config(job: Job) -> None:
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
) -> Job:
    """Discover plugins, load and validate the config: everything short of launching."""
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
    job = Job(config=config, plugins=host, models=models, backends=backends)
    job.config_file = config_path
    if validate:
        validate_core(job)
        host.hook.titan_validate_config(config=config, active=host.active)
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


def validate_core(job: Job) -> None:
    """Checks of core's own sections, before any process starts."""
    c = job.config
    family = job.models.get(c.model.name)
    args = family.flavor(c.model.flavor)
    max_seq_len = getattr(args, "max_seq_len", None)
    if isinstance(max_seq_len, int) and c.training.seq_len > max_seq_len > 0:
        raise ConfigError(
            f"training.seq_len {c.training.seq_len} exceeds the model's max_seq_len "
            f"{max_seq_len} ({c.model.name}/{c.model.flavor}); lower training.seq_len"
        )
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
    from titan.core.folders import check_folders, rerun_notes

    check_folders(c)  # before anything is built: one line, exit 2 (docs/reliability.md)
    c.notes.extend(rerun_notes(c))


def resolve_degrees(
    world_size: int, dp_replicate: int, dp_shard: int, tp: int
) -> tuple[int, int, int]:
    """Fill in ``dp_shard = -1`` and check that the degrees multiply to the world size.

    Torch-free, so that the launching ``titan`` process checks it before any
    rank starts (:func:`check_launch`); the ranks check it again.
    """
    if tp > world_size:
        raise ConfigError(
            f"parallelism.tensor_parallel_degree {tp} is larger than the {world_size} "
            f"process(es) of this run; start {tp} or more (--nproc {tp}) or lower the degree"
        )
    if dp_shard == -1:
        if world_size % (dp_replicate * tp):
            raise ConfigError(
                f"world size {world_size} is not divisible by data_parallel_replicate_degree "
                f"{dp_replicate} x tensor_parallel_degree {tp}; change the degrees or the "
                "process count (--nproc)"
            )
        dp_shard = world_size // (dp_replicate * tp)
    if dp_replicate * dp_shard * tp != world_size:
        raise ConfigError(
            f"parallelism degrees dp_replicate {dp_replicate} x dp_shard {dp_shard} x tp {tp} = "
            f"{dp_replicate * dp_shard * tp}, but {world_size} processes run; make them match "
            "(--nproc, or data_parallel_shard_degree = -1)"
        )
    return dp_replicate, dp_shard, tp


def check_launch(job: Job, nproc_per_node: int) -> None:
    """Checks that need the config and the number of processes, run before any process starts.

    A backend calls this once it knows how many processes it starts per
    machine (the local backend: ``--nproc``, or one per GPU). Mistakes found
    here would otherwise surface inside every rank, after the model build,
    wrapped in torchrun's report. The ranks repeat the checks (a safety net).
    """
    c = job.config
    world = nproc_per_node * max(c.launch.nnodes, 1)
    p = c.parallelism
    dp_rep, dp_shard, _ = resolve_degrees(
        world,
        p.data_parallel_replicate_degree,
        p.data_parallel_shard_degree,
        p.tensor_parallel_degree,
    )
    if dp_rep * dp_shard > 1 and not job.plugins.hook.titan_apply_data_parallel.get_hookimpls():
        raise ConfigError(
            f"{dp_rep * dp_shard} data-parallel ranks, but no active plugin applies data "
            "parallelism (is 'fsdp' blocked with no:fsdp?); remove no:fsdp, or run one "
            "process (--nproc 1)"
        )
    t = c.training
    per_step = t.local_batch_size * dp_rep * dp_shard
    if t.global_batch_size not in (-1, 0) and t.global_batch_size % per_step:
        raise ConfigError(
            f"training.global_batch_size {t.global_batch_size} is not a multiple of "
            f"local_batch_size {t.local_batch_size} x data-parallel degree {dp_rep * dp_shard} "
            f"= {per_step}; change one of them"
        )
    if c.launch.nproc_per_node != nproc_per_node:
        # Plugins' checks that need the world size (fp8-ag needs sharding) skip it when
        # launch.nproc_per_node is 0 ("one per GPU"); here the number is known.
        known = JobConfig(
            {**c.sections, "launch": dataclasses.replace(c.launch, nproc_per_node=nproc_per_node)},
            c.requested_plugins,
        )
        known.source = c.source
        job.plugins.hook.titan_validate_config(config=known, active=job.plugins.active)


def check_files_here(job: Job) -> None:
    """Checks that read this machine's files, for backends whose ranks run on this machine.

    The tokenizer (readable, and no larger than the model's vocabulary), the
    initial checkpoint folder and the data: each would otherwise fail in every
    rank after the process group and, for the data, the model are built.
    """
    from titan.core.data.loader import check_data_here
    from titan.core.tokenizers import check_vocab_size, load_tokenizer

    c = job.config
    tokenizer = load_tokenizer(c.model.tokenizer_path)
    args = job.models.get(c.model.name).flavor(c.model.flavor)
    if c.model.vocab_size and hasattr(args, "with_vocab"):
        args = args.with_vocab(c.model.vocab_size)
    vocab = getattr(args, "vocab_size", None)
    if isinstance(vocab, int):
        check_vocab_size(tokenizer, vocab, f"{c.model.name}/{c.model.flavor}")
    initial = c.checkpoint.initial_load_path
    if initial and not (Path(initial) / ".metadata").is_file():
        what = "does not exist" if not Path(initial).exists() else "is not a checkpoint folder"
        raise ConfigError(
            f"checkpoint.initial_load_path '{initial}' {what} (no .metadata in it); point it at "
            "a folder written by `titan convert hf-to-titan` or a <dump>/checkpoint/step-N"
        )
    _check_load_step(c)
    check_data_here(c)


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
