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


EXIT_STOPPED_RESUMABLE = 75
"""Exit code of a run that stopped on request (SIGTERM, SIGUSR1, SIGUSR2) after writing
a checkpoint: run the same command again to resume. 75 is ``EX_TEMPFAIL`` of
``sysexits.h`` ("temporary failure, retry later"); schedulers (Slurm requeue, SageMaker
spot) treat it as "restart me"."""


class DoesNotFit(ConfigError):
    """The job's memory per device (its training state, or its step's planned peak) exceeds the
    device's: refused before launch; ``titan plan`` still prints the plan of such a job."""
