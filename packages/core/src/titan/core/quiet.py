"""Silence known-harmless library noise, so that a run's output is titan's own.

Called first thing in every process that trains (the ranks' ``python -m
titan.core.train``, and ``titan`` itself for a one-process run), before torch,
torchao or datasets are imported: some of the noise comes at import time.
Each filter below is narrow (one message, or one library logger below ERROR)
and says why what it hides needs no action from the user. Real problems are
errors, and errors are never filtered.
"""

from __future__ import annotations

import logging
import os
import warnings

# (message regex, category): warnings.warn calls of our dependencies.
_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # Deprecations inside torch/torchao/datasets/torchdata: about their internals and
    # future versions; titan pins its versions (uv.lock), nothing for a user to change.
    ("", DeprecationWarning),
    ("", FutureWarning),
    # torchao's float8 on CPU: its KernelPreference enum registration notice.
    (".*KernelPreference.*", UserWarning),
    # torchdata's StatefulDataLoader calls torch.set_vital, deprecated in torch; harmless.
    (".*set_vital.*", UserWarning),
    # Inductor falls back to eager for complex-number ops (RoPE's rotation): correct
    # results, and the rest of each block is still compiled.
    (".*Torchinductor does not support code generation for complex operators.*", UserWarning),
)

# Library loggers whose WARNING-level records are known-harmless on the machines titan runs on.
_LOGGERS: tuple[str, ...] = (
    # "Failed to load ... _C_mxfp8 / _C_cutlass_90a": CUDA kernels of other GPUs; unused here.
    "torchao",
    # Resolving data files and streaming notices; a failure raises, and titan reports it.
    "datasets",
    # DCP's per-call notices (single-process "assuming the intent"); failures raise.
    "torch.distributed.checkpoint",
    # "<enum 'KernelPreference'> is an Enum subclass ... register_constant() is deprecated":
    # torchao registering its enum for torch.compile; torch still accepts it.
    "torch.utils._pytree",
    # "While redistributing from ... N sequential ... operations will be performed": DTensor's
    # note that a reduction over several mesh dimensions (titan's mesh always has
    # dp_replicate, dp_shard and tp) takes one collective per dimension; a speed note
    # about the mesh layout, which the user does not choose.
    "torch.distributed.tensor._redistribute",
    # "No CUDA runtime is found, using CUDA_HOME=...": printed when inductor looks for a
    # CUDA toolkit on a CPU-only machine; the CPU code path needs none.
    "torch.utils.cpp_extension",
)


def quiet_library_noise() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warning from tokenizers
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
