"""Silence known-harmless library noise in user-facing output.

torchao prints "Failed to load ... _C_mxfp8 / _C_cutlass_90a" on machines
without those CUDA kernels, and deprecation warnings from our dependencies
are not something a user can act on.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_library_noise() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*KernelPreference.*")
    warnings.filterwarnings("ignore", message=".*set_vital.*")
    for name in ("torchao", "datasets", "torch.distributed.checkpoint"):
        logging.getLogger(name).setLevel(logging.ERROR)
