"""titan.core: the trainer, config, plugin hooks and the `titan` command.

This module must stay importable without torch: `titan --help` and
`titan plugins list` import it, and third-party plugins import `hookimpl`
from here at module level.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

PROJECT_NAME = "titan"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for plugin hook implementations: ``@hookimpl def titan_...``."""

try:
    __version__ = version("titan-core")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
