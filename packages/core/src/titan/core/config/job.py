"""Loading the job config: defaults, TOML file and overrides merged into a :class:`JobConfig`.

The result is a :class:`JobConfig` whose attributes are the sections
(``config.training.steps``). Every mistake is a :class:`ConfigError` that
names the key, what was expected and, for typos, the closest valid name.

The steps live in their own modules: :mod:`~titan.core.config.toml_reader` reads the
file, :mod:`~titan.core.config.overrides` parses the command line,
:mod:`~titan.core.config.resolver` applies the torchtitan aliases and checks names, and
:mod:`~titan.core.config.coerce` gives each value its declared type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from titan.core.config.aliases import ConfigAlias
from titan.core.config.eras import detect_era
from titan.core.config.overrides import parse_cli_value
from titan.core.config.resolver import Resolver
from titan.core.config.toml_reader import flatten, read_toml
from titan.core.errors import ConfigError

if TYPE_CHECKING:
    from titan.core.config.sections import (
        CheckpointSection,
        CommSection,
        DataSection,
        JobSection,
        LaunchSection,
        LRSchedulerSection,
        MetricsSection,
        ModelSection,
        OptimizerSection,
        ParallelismSection,
        PluginsSection,
        TrainingSection,
        ValidationSection,
    )


class JobConfig:
    """Typed sections of one job, plus the plugins its file or aliases switched on.

    titan's own sections are declared below, so a plugin (and an editor or type checker)
    sees ``config.training`` as a :class:`~titan.core.config.sections.TrainingSection`; a
    plugin's own section is reached the same way and typed by its dataclass.
    """

    job: JobSection
    model: ModelSection
    optimizer: OptimizerSection
    lr_scheduler: LRSchedulerSection
    training: TrainingSection
    metrics: MetricsSection
    checkpoint: CheckpointSection
    parallelism: ParallelismSection
    comm: CommSection
    launch: LaunchSection
    plugins: PluginsSection
    data: DataSection
    validation: ValidationSection

    def __init__(self, sections: dict[str, Any], requested_plugins: list[str] | None = None):
        self._sections = sections
        self.requested_plugins: list[str] = list(requested_plugins or [])
        self.notes: list[str] = []
        self.source: Path | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_sections"][name]
        except KeyError:
            raise AttributeError(f"config has no section '{name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self._sections

    @property
    def sections(self) -> dict[str, Any]:
        return self._sections

    def to_dict(self, only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        keep = set(only) if only is not None else None
        return {
            name: dataclasses.asdict(sec)
            for name, sec in self._sections.items()
            if keep is None or name in keep
        }

    def to_toml(self, only: Iterable[str] | None = None) -> str:
        from titan.core.config.toml_writer import dumps

        return dumps(self.to_dict(only))


def load_config(
    path: Path | None,
    overrides: Iterable[tuple[str, str]],
    schema: Mapping[str, type],
    aliases: Iterable[ConfigAlias],
) -> JobConfig:
    """Merge defaults, the TOML file and the overrides (last wins) into a :class:`JobConfig`."""
    resolver = Resolver(schema, aliases)
    values: dict[str, Any] = {}
    if path is not None:
        items = flatten(read_toml(path), str(path))
        era = detect_era(k for k, _ in items)
        if era is not None:
            values.update(era.defaults)
            changed = "".join(f"; {k} = {v!r}" for k, v in era.defaults.items())
            resolver.notes.append(f"read as a {era.name} file{changed}")
        for key, value in items:
            try:
                values.update(resolver.resolve(key, value, from_cli=False))
            except ConfigError as exc:  # name the file: the key may be in any of several
                raise ConfigError(f"{path}: {exc}") from None
    for key, raw in overrides:
        if "." not in key:
            raise ConfigError(
                f"override '--{key}' must name a section and a key: --section.key=value"
            )
        values.update(resolver.resolve(key, parse_cli_value(raw), from_cli=True, raw=raw))
    sections: dict[str, Any] = {}
    for name, cls in schema.items():
        kwargs = {k.split(".", 1)[1]: v for k, v in values.items() if k.split(".", 1)[0] == name}
        sections[name] = cls(**kwargs)
    config = JobConfig(sections)
    config.source = path
    config.notes = resolver.notes
    config.requested_plugins = (
        [*sections["plugins"].enabled, *resolver.plugins]
        if "plugins" in sections
        else list(resolver.plugins)
    )
    return config
