"""User-facing errors.

Anything raised as a :class:`TitanError` is a mistake in the user's input
(config, flags, files). The CLI prints its message on one line and exits
with code 2, without a traceback; everything else is a bug and keeps its
traceback.
"""


class TitanError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class ConfigError(TitanError):
    """The job config (TOML file or ``--section.key=value`` override) is invalid."""


class PluginError(TitanError):
    """A plugin is unknown, broken, or conflicts with another one."""
