"""mirror: copies every completed checkpoint to a second folder, as an upload would.

``titan_checkpoint_saved`` runs once a checkpoint is complete and published, on every
rank; the copy is made once, by rank 0 (on a shared file system every rank sees the
same files). It is written under a temporary name and renamed, so a copy that exists
is a whole one, like titan's own checkpoints; a resume can start from it by putting it
back in a run's checkpoint folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from titan.core import hookimpl
from titan.core.errors import ConfigError


@dataclass
class MirrorConfig:
    folder: str = ""
    """Where the copies go: <folder>/step-<N>, as in the run's checkpoint folder."""


@hookimpl
def titan_config_sections():
    return {"mirror": MirrorConfig}


@hookimpl
def titan_validate_config(config):
    if not config.mirror.folder:
        raise ConfigError("plugin 'mirror' needs a folder to copy to: set --mirror.folder=PATH")
    if not config.checkpoint.enable_checkpoint:
        raise ConfigError(
            "plugin 'mirror' copies checkpoints, but checkpointing is off: "
            "set --checkpoint.enable_checkpoint=true"
        )


@hookimpl
def titan_checkpoint_saved(trainer, path):
    if not trainer.parallel.is_main:
        return
    import shutil
    from pathlib import Path

    target = Path(trainer.config.mirror.folder) / path.name
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(path, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
