"""fp8-ag: FSDP2 all-gathers the float8 linears' weights in float8 (torchao).

Without it, FSDP2 all-gathers each weight in the compute dtype (bf16) and
every Float8Linear then casts the gathered weight to float8. With it, each
rank casts its *shard* to float8 first and the all-gather moves one byte per
element, half of bf16's traffic (torchao's ``enable_fsdp_float8_all_gather``:
the weights become ``WeightWithDynamicFloat8CastTensor``, whose FSDP hooks
do the cast). The float8 scale is one per tensor, so this needs fp8's
``tensorwise`` recipe; a rowwise scale would need the whole row.

The scale of a sharded weight is the max over all shards. After each
optimizer step ``precompute_float8_dynamic_scale_for_fsdp`` computes every
weight's scale in one combined all-reduce, instead of one small all-reduce
per weight inside the next forward (``fp8_ag.precompute_scales``).

Needs: the fp8 plugin (activated with it), the tensorwise recipe, and FSDP
sharding (``data_parallel_shard_degree`` > 1, i.e. two or more processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from titan.core import hookimpl
from titan.core.config import ConfigAlias
from titan.optims._common import say_once

REQUIRES = ("fp8",)


@dataclass
class Float8AllGatherConfig:
    precompute_scales: bool = True
    """Compute all float8 weight scales in one all-reduce after each optimizer step."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"fp8_ag": Float8AllGatherConfig}


@hookimpl
def titan_config_aliases() -> list[ConfigAlias]:
    return [
        alias
        for section in ("float8", "quantize.linear.float8")
        for alias in (
            ConfigAlias(f"{section}.enable_fsdp_float8_all_gather", activates="fp8-ag"),
            ConfigAlias(
                f"{section}.precompute_float8_dynamic_scale_for_fsdp",
                target="fp8_ag.precompute_scales",
            ),
        )
    ]


def _no_sharding_error(dp_shard: int) -> Exception:
    from titan.core.errors import ConfigError

    return ConfigError(
        f"plugin 'fp8-ag' all-gathers FSDP-sharded weights in float8, but this run does not "
        f"shard them (data_parallel_shard_degree {dp_shard}); run two or more data-parallel "
        "processes (e.g. --nproc 2), or remove fp8-ag from the plugins"
    )


@hookimpl
def titan_validate_config(config: Any, layout: Any) -> None:
    from titan.core.errors import ConfigError

    recipe = config.fp8.recipe_name
    if recipe != "tensorwise":
        raise ConfigError(
            f"plugin 'fp8-ag' needs fp8.recipe_name = 'tensorwise' (one float8 scale per "
            f"weight, known before the all-gather), but it is '{recipe}'; set "
            "--fp8.recipe_name=tensorwise or remove fp8-ag from the plugins"
        )
    from titan.core.checks import degrees

    _, dp_shard, _ = degrees(config, layout)
    if dp_shard <= 1:
        raise _no_sharding_error(dp_shard)


@hookimpl(trylast=True)
def titan_convert_model(model: Any, config: Any, parallel: Any) -> None:
    """After fp8's conversion: give each Float8Linear the float8 all-gather weight.

    The same steps torchao's ``Float8Linear.from_float`` takes when
    ``enable_fsdp_float8_all_gather`` is set at conversion time; done here so
    that fp8 stays one plugin and this one only adds to it.
    """
    import dataclasses

    import torch
    from torchao.float8.float8_linear import Float8Linear
    from torchao.float8.fsdp_utils import WeightWithDynamicFloat8CastTensor

    if parallel.dp_shard <= 1:
        raise _no_sharding_error(parallel.dp_shard)
    count = 0
    for module in model.modules():
        if not isinstance(module, Float8Linear) or isinstance(
            module.weight, WeightWithDynamicFloat8CastTensor
        ):
            continue
        module.config = dataclasses.replace(module.config, enable_fsdp_float8_all_gather=True)
        module.weight = torch.nn.Parameter(
            WeightWithDynamicFloat8CastTensor(
                module.weight,
                module.linear_mm_config,
                module.config.cast_config_weight.target_dtype,
            ),
            requires_grad=module.weight.requires_grad,
        )
        count += 1
    say_once(
        f"fp8-ag: FSDP all-gathers the weights of {count} float8 linear layers in float8"
        + (
            " (scales precomputed after each optimizer step)"
            if config.fp8_ag.precompute_scales
            else ""
        )
    )


@hookimpl
def titan_after_optimizer_step(trainer: Any, step: int) -> None:
    """One all-reduce for every float8 weight's scale, ready for the next all-gathers."""
    if trainer.config.fp8_ag.precompute_scales:
        from torchao.float8 import precompute_float8_dynamic_scale_for_fsdp

        precompute_float8_dynamic_scale_for_fsdp(trainer.model)
