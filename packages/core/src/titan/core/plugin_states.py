"""The plugins' own checkpoint state (``titan_checkpoint_state``), collected and checked.

Collected after the core states were loaded, so a plugin that builds its state from the
model sees the resumed weights; the checkpointer then overwrites that state with the
checkpoint's, if it has one for the plugin. A name taken twice, or an object torch's
distributed checkpoint cannot save, is one line naming the plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from titan.core.errors import PluginError

if TYPE_CHECKING:
    from titan.core.checkpoint import CheckpointManager
    from titan.core.plugins import PluginHost

STATEFUL = ("state_dict", "load_state_dict")


def collect_plugin_states(
    plugins: PluginHost, trainer: Any, checkpointer: CheckpointManager
) -> list[str]:
    """Add every active plugin's state to ``checkpointer``; returns the names started fresh."""
    extra: dict[str, Any] = {}
    for plugin, returned in plugins.call_each("titan_checkpoint_state", trainer=trainer):
        for name, obj in (returned or {}).items():
            who = f"plugin '{plugin}'"
            if name in extra or name in checkpointer.states:
                raise PluginError(
                    f"{who} saves checkpoint state under '{name}', which is already taken; "
                    "rename it in titan_checkpoint_state"
                )
            if not all(callable(getattr(obj, m, None)) for m in STATEFUL):
                raise PluginError(
                    f"{who} returned {type(obj).__name__} for checkpoint state '{name}', "
                    "which lacks state_dict()/load_state_dict(); return a Stateful object"
                )
            extra[name] = obj
    return checkpointer.add_states(extra)
