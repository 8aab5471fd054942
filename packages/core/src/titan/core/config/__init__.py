"""Job configuration: TOML file + ``--section.key=value`` overrides -> typed sections."""

from titan.core.config.aliases import ConfigAlias
from titan.core.config.job import JobConfig
from titan.core.config.overrides import parse_overrides

__all__ = ["ConfigAlias", "JobConfig", "parse_overrides"]
