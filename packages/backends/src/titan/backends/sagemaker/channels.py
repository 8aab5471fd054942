"""``sm-channel:NAME``: a dataset that is a SageMaker input channel, in the job's container.

The SageMaker backend registers this prefix with core's data sources
(``titan_register_data_sources``): when the job has an S3 input, titan's
config in the code channel names its data ``sm-channel:<channel>``, and every
rank reads the folder SageMaker downloaded or mounted that channel to.
"""

from __future__ import annotations

import os
from pathlib import Path

from titan.core.errors import ConfigError

PREFIX = "sm-channel:"
INPUT_ROOT = Path("/opt/ml/input/data")


def channel_dir(name: str) -> str:
    """The folder of SageMaker input channel ``name``: ``$SM_CHANNEL_<NAME>``, else under /opt/ml."""
    env = os.environ.get(f"SM_CHANNEL_{name.upper().replace('-', '_')}")
    path = Path(env) if env else INPUT_ROOT / name
    if not path.is_dir():
        raise ConfigError(
            f"SageMaker input channel '{name}' not found: neither SM_CHANNEL_{name.upper()} is set "
            f"nor '{INPUT_ROOT / name}' exists; pass the channel to the training job "
            f"(InputData(channel_name='{name}', ...)) or use a local path"
        )
    return str(path)
