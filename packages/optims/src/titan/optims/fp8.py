"""fp8: float8 training of the linear layers with torchao (convert_to_float8_training).

Runs first in the build (``titan_convert_model``): every ``nn.Linear`` that
passes the filter becomes a torchao ``Float8Linear``, before tensor parallel,
activation checkpointing, compile and FSDP see the model, so those plugins
shard, wrap and compile the float8 modules. The filter always skips the
output projection (its logits feed the loss, where float8's three mantissa
bits cost accuracy) and any linear whose dimensions are not multiples of 16
(a requirement of float8 matmul kernels).

Where float8 matrix multiplies are not available (GPUs below compute
capability 8.9, a CPU build of torch without ``_scaled_mm``, or an Intel CPU
with AMX, where torch hands them to oneDNN's reference kernel) torchao's
emulation is used instead: same float8 rounding, matmuls in high precision,
no speed-up. titan says so once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from titan.core import hookimpl
from titan.core.config import ConfigAlias
from titan.optims._common import say_once

ALWAYS_SKIPPED = ("output",)
"""Module names never converted: the final projection to the vocabulary."""

RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")


@dataclass
class Float8Config:
    recipe_name: Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"] = "tensorwise"
    """torchao's float8 recipe: one scale per tensor (fastest; the only one with float8
    all-gather), one per row (more accurate), or rowwise with the weight gradient in
    high precision (most accurate)."""
    filter_fqns: list[str] = field(default_factory=list)
    """Extra linear layers to keep in high precision: a layer is skipped when one of these
    strings occurs in its name (e.g. "attention.wk"). The output layer is always skipped."""
    emulate: bool = False
    """Always emulate float8 matmuls, even where the hardware has them (for debugging);
    where it lacks them titan emulates anyway."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"fp8": Float8Config}


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    # 2024: [float8] enable_float8_linear (earliest: training.fp8_linear = "dynamic");
    # v0.1.0: model.converters = ["float8"] + [float8]; v0.2.x: + [quantize.linear.float8].
    return [
        ConfigAlias("float8.enable_float8_linear", activates="fp8"),
        ConfigAlias("training.fp8_linear", activates="fp8"),
        ConfigAlias("model.converters", activates="fp8", item="float8"),
        ConfigAlias("model.converters", activates="fp8", item="quantize.linear.float8"),
        *(
            ConfigAlias(f"{section}.{key}", target=f"fp8.{key}")
            for section in ("float8", "quantize.linear.float8")
            for key in ("recipe_name", "filter_fqns", "emulate")
        ),
    ]


@hookimpl
def titan_validate_config(config: Any, layout: Any) -> None:
    from titan.core.errors import ConfigError

    c = config.fp8
    empty = [f for f in c.filter_fqns if not f.strip()]
    if empty:
        raise ConfigError(
            "fp8.filter_fqns contains an empty name, which would match every layer and "
            "convert nothing; remove it"
        )
    device = layout.device
    if device.kind == "cuda" and device.float8 is False and not c.emulate:
        # A GPU without float8 units would emulate: slower than bf16, for nothing. On CPU
        # titan emulates where it must (tests, debugging) and says why.
        raise ConfigError(
            f"plugin 'fp8' needs float8 matmuls (GPUs of compute capability 8.9+: H100, H200, "
            f"L40S, L4, B200), but {layout.where} has {device.model} GPUs; pick GPUs with "
            "float8, remove fp8 from the plugins, or set --fp8.emulate=true (float8 rounding "
            "at bf16 speed or slower, for debugging)"
        )


@cache
def scaled_mm_runs(device_type: str) -> bool:
    """Whether this torch build runs ``torch._scaled_mm`` on ``device_type`` (a tiny probe, once)."""
    import torch

    try:
        a = torch.ones(16, 16, device=device_type).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device_type)
        torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def onednn_reference_float8(device_type: str) -> bool:
    """Whether torch sends CPU float8 matmuls to oneDNN, which runs them in a reference loop.

    torch (2.15) calls oneDNN for ``_scaled_mm`` on x86 CPUs with AMX when
    oneDNN is enabled, and oneDNN 3.13 has no optimized float8 matmul there:
    measured on a Sapphire Rapids, 1.1 s for a 256x256x1024 product that
    takes 3 ms in torch's own path (dequantize, float32 matmul), and 50 s
    per step of the debug model. Elsewhere torch uses its own path. Not
    cached: ``torch.backends.mkldnn.flags(enabled=False)`` changes the answer.
    """
    if device_type != "cpu":
        return False
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private; absent means unknown
    return bool(
        amx is not None
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and amx()
    )


def float8_matmul_available(device_type: str, device_index: int | None = None) -> bool:
    """Whether this device multiplies float8 matrices at a usable speed (``torch._scaled_mm``).

    CUDA needs compute capability 8.9 (Ada, Hopper) or newer. On CPU it
    depends on the torch build (probed once) and on where torch sends the
    product (oneDNN's reference kernel on AMX CPUs is hundreds of times
    slower than emulating).
    """
    import torch

    if device_type == "cuda":
        return torch.cuda.get_device_capability(device_index) >= (8, 9)
    return scaled_mm_runs(device_type) and not onednn_reference_float8(device_type)


def why_emulated(device: Any) -> str:
    """The one line that says why this run emulates float8 matmuls."""
    if device.type == "cuda":
        return "float8 matmuls are not available on this GPU (compute capability below 8.9)"
    if onednn_reference_float8(device.type):
        return (
            "float8 matmuls are not available at speed on this CPU: torch sends them to "
            "oneDNN, whose float8 kernel on AMX CPUs is a reference loop"
        )
    return f"float8 matmuls are not available on this torch build on {device.type}"


def float8_linear_config(c: Float8Config, device: Any) -> Any:
    """The torchao ``Float8LinearConfig`` for ``c`` on ``device`` (emulating if needed)."""
    import dataclasses

    from torchao.float8 import Float8LinearConfig

    emulate = c.emulate
    if not emulate and not float8_matmul_available(device.type, device.index):
        emulate = True
        say_once(
            f"fp8: {why_emulated(device)}; using torchao's emulation "
            "(float8 rounding, high-precision matmuls, no speed-up)"
        )
    elif emulate:
        say_once("fp8: emulating float8 matmuls (fp8.emulate = true)")
    cfg = Float8LinearConfig.from_recipe_name(c.recipe_name)
    return dataclasses.replace(cfg, emulate=emulate) if emulate else cfg


def make_filter(filter_fqns: list[str]) -> Any:
    """``(module, fqn) -> bool``: convert this linear? (torchao's ``module_filter_fn`` contract).

    Names in ``filter_fqns`` match as substrings, as in torchtitan ("attention.wk"
    skips that projection in every block); the output layer is matched exactly.
    """

    def convert(module: Any, fqn: str) -> bool:
        import torch

        if not isinstance(module, torch.nn.Linear):
            return False
        if fqn in ALWAYS_SKIPPED or any(s in fqn for s in filter_fqns):
            return False
        out_features, in_features = module.weight.shape
        return out_features % 16 == 0 and in_features % 16 == 0

    return convert


def _follow_cpu_autocast(module: Any, args: tuple) -> tuple | None:
    """Cast a Float8Linear's input to the CPU autocast dtype, as ``F.linear`` would be.

    torchao's Float8Linear honours CUDA autocast only; under CPU autocast its
    input stays float32 while the gradient arriving from the next (autocast)
    op is bfloat16, and the high-precision weight-gradient matmul of
    ``rowwise_with_gw_hp`` fails on the dtype mismatch.
    """
    import torch

    (x, *rest) = args
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        if x.dtype != dtype and x.is_floating_point():
            return (x.to(dtype), *rest)
    return None


def use_inductor_precision_casts() -> None:
    """Make compiled float8 rowwise casts round as in eager (torchtitan's workaround).

    Without it, inductor fuses the rowwise scaling and the cast to float8
    without the intermediate rounding eager does, and rowwise runs with
    torch.compile can produce NaN losses (pytorch#150859, torchtitan#1056).
    torchtitan sets ``torch._inductor.config.emulate_precision_casts`` for the
    rowwise recipe; so does titan. It is a process-wide inductor setting that
    only changes compiled code.
    """
    import torch._inductor.config

    torch._inductor.config.emulate_precision_casts = True


@hookimpl(tryfirst=True)
def titan_convert_model(model: Any, config: Any, parallel: Any) -> None:
    """Swap the qualifying ``nn.Linear`` layers for ``Float8Linear`` (meta device)."""
    import torch
    from torchao.float8 import convert_to_float8_training
    from torchao.float8.float8_linear import Float8Linear

    c = config.fp8
    if c.recipe_name == "rowwise":
        use_inductor_precision_casts()
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    convert_to_float8_training(
        model,
        module_filter_fn=make_filter(c.filter_fqns),
        config=float8_linear_config(c, parallel.device),
    )
    converted = [n for n, m in model.named_modules() if isinstance(m, Float8Linear)]
    for m in model.modules():
        if isinstance(m, Float8Linear):
            m.register_forward_pre_hook(_follow_cpu_autocast)
    if not converted:
        from titan.core.errors import ConfigError

        raise ConfigError(
            f"fp8 converted none of the model's {len(linears)} linear layers (all filtered out "
            "by fp8.filter_fqns or not multiples of 16); remove fp8 from the plugins"
        )
    kept = sorted(set(linears) - set(converted))
    shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
    say_once(
        f"fp8: {len(converted)} of {len(linears)} linear layers train in float8 "
        f"(recipe {c.recipe_name}); kept in high precision: {shown or 'none'}"
    )
