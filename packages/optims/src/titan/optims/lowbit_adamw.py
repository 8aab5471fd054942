"""lowbit-adamw: torchao's AdamW with 8-bit or 4-bit states, as ``--optimizer.name=AdamW8bit``.

AdamW keeps two float32 tensors per parameter (8 bytes, twice the float32 weights
themselves); torchao's ``AdamW8bit`` keeps both moments as 1-byte codes into a
dynamic quantization map with one float32 scale per block of 256 values, and
``AdamW4bit`` packs them in 4 bits with a scale per 128 values: about 2 and 1 byte
per parameter. The update is still computed in float32 (each moment is
dequantized, updated and quantized back), so the loss follows AdamW's closely.

Opt-in (``--plugins lowbit-adamw``): it builds only the names in :data:`BLOCK_SIZE`
and answers ``None`` for every other name, so AdamW stays the built-in one.

What torchao does that a user should know:

* tensors under 4096 values (or not a multiple of the block, per rank's shard) keep
  float32 moments, as bitsandbytes does: norms and biases cost 8 bytes per value;
* each parameter's update is one ``torch.compile``-d function (inductor), so the
  first step compiles (a C++ compiler is needed on CPU, triton on GPU), and
  ``optimizer.implementation`` (torch's kernels) has no meaning here;
* FSDP2 works (each rank quantizes its own shard) and its state goes through torch's
  distributed state-dict API into titan's checkpoints as the low-bit tensors
  themselves (codes and scales), so a resumed run continues bit for bit (tested
  for AdamW8bit on 2 FSDP ranks: tests/optims/test_optim_lowbit.py).
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from titan.core import hookimpl
from titan.core.builtin.optimizer import adam_arguments

if TYPE_CHECKING:
    import torch

    from titan.core.config.job import JobConfig
    from titan.core.parallel import ParallelDims

BLOCK_SIZE: dict[str, int] = {"AdamW8bit": 256, "AdamW4bit": 128}
"""Values per quantization block: torchao's defaults, passed explicitly so that the size
reported before launch and the optimizer built agree whatever torchao's defaults become."""

CODE_BYTES: dict[str, float] = {"AdamW8bit": 1.0, "AdamW4bit": 0.5}
"""Bytes of one moment's code per value (4-bit codes are packed two to a byte)."""

SCALE_BYTES = 4
"""Each block's scale is one float32."""

MOMENTS = 2
"""exp_avg and exp_avg_sq, both quantized (amsgrad, a third one, is not offered)."""


def state_bytes_per_param(name: str) -> float:
    """Bytes of optimizer state per parameter of a quantized tensor: codes plus block scales.

    8-bit: 2 x (1 + 4/256) = 2.03125; 4-bit: 2 x (0.5 + 4/128) = 1.0625. Tensors that stay
    float32 (under 4096 values) are few and small in any real model, so this is the
    per-parameter figure that titan's memory checks and ``titan plan`` should use.
    """
    return MOMENTS * (CODE_BYTES[name] + SCALE_BYTES / BLOCK_SIZE[name])


def _cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU ($CXX, else the usual names), or None."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return next((p for p in map(shutil.which, ("g++", "c++", "clang++")) if p), None)


@hookimpl
def titan_validate_config(config: JobConfig, layout: Any) -> None:
    """Refuse, before launch, what this optimizer would ignore or fail on at its first step."""
    from titan.core.errors import ConfigError

    o = config.optimizer
    if o.name not in BLOCK_SIZE:
        return
    if o.implementation != "fused":
        # The default ("fused") is accepted: torchao's compiled step is one fused kernel
        # per parameter. A user who asks for torch's foreach or for-loop kernels expects
        # something this optimizer cannot give; say so rather than ignore it.
        raise ConfigError(
            f"optimizer.implementation={o.implementation} picks one of torch's AdamW kernels, "
            f"but {o.name} (plugin lowbit-adamw) always runs torchao's compiled step; "
            "remove optimizer.implementation"
        )
    if layout.device.kind == "cpu" and _cxx_compiler() is None:
        raise ConfigError(
            f"{o.name} compiles its update with torch.compile, which on CPU needs a C++ "
            "compiler (g++ or clang++, or set CXX); install one or use optimizer.name=AdamW"
        )


@hookimpl
def titan_optimizer_state_bytes(config: JobConfig) -> float | None:
    """The low-bit state size, so that titan plan and the memory checks count the saving."""
    name = config.optimizer.name
    return state_bytes_per_param(name) if name in BLOCK_SIZE else None


@hookimpl
def titan_build_optimizer(
    model: torch.nn.Module, config: JobConfig, parallel: ParallelDims
) -> torch.optim.Optimizer | None:
    """torchao's optimizer with titan's [optimizer] settings; None for names not ours."""
    o = config.optimizer
    if o.name not in BLOCK_SIZE:
        return None
    import warnings

    import torchao.optim

    # The compiled step sees torchao's state subclass, which lacks a hash for AOT
    # autograd's cache: torch says so once per run. The step has no autograd graph to
    # cache and compiles correctly; inductor's own cache still applies. Nothing to do.
    warnings.filterwarnings("ignore", message=".*does not implement _stable_hash_for_caching.*")
    cls = {"AdamW8bit": torchao.optim.AdamW8bit, "AdamW4bit": torchao.optim.AdamW4bit}[o.name]
    return cls(model.parameters(), **adam_arguments(config), block_size=BLOCK_SIZE[o.name])
