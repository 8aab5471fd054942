"""The ``titan convert`` command group (added to the CLI by the llama plugin).

Kept torch-free at import time: torch, safetensors and DCP are imported
inside the command bodies, so ``titan --help`` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

_out = Console(soft_wrap=True, highlight=False)

convert_app = typer.Typer(
    help="Convert model checkpoints between Hugging Face and titan (DCP).",
    no_args_is_help=True,
)


class DType(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


DTypeOpt = Annotated[
    DType, typer.Option("--dtype", help="Cast the weights; auto keeps the stored dtype.")
]


def _registry():
    """Every installed model family and flavor, third parties' included."""
    from titan.core.plugins import load_plugins
    from titan.core.quiet import quiet_library_noise
    from titan.core.registry import ModelRegistry

    quiet_library_noise()
    registry = ModelRegistry()
    load_plugins().pm.hook.titan_register_models(registry=registry)
    return registry


@convert_app.command("hf-to-titan")
def hf_to_titan(
    hf_dir: Annotated[Path, typer.Argument(help="Hugging Face folder: config.json + safetensors.")],
    out: Annotated[Path, typer.Argument(help="New titan checkpoint folder to write.")],
    dtype: DTypeOpt = DType.auto,
) -> None:
    """Read a Hugging Face Llama checkpoint into a titan (DCP) checkpoint folder."""
    from titan.models.convert import convert_hf_to_titan

    done = convert_hf_to_titan(hf_dir, out, _registry(), dtype.value)
    what = f"{done.family}/{done.flavor}" if done.flavor else f"{done.family} (custom size)"
    flavor = done.flavor or str(out / "titan_model.json")
    tokenizer = f" --model.tokenizer_path={out}" if (out / "tokenizer.json").is_file() else ""
    _out.print(
        f"wrote {out}: {what}, {done.parameters:,} parameters, {done.dtype}\n"
        f"train from it: titan run --model.name={done.family} --model.flavor={flavor}"
        f" --checkpoint.initial_load_path={out}{tokenizer}"
    )


@convert_app.command("titan-to-hf")
def titan_to_hf(
    ckpt: Annotated[
        Path,
        typer.Argument(help="titan checkpoint: a converted folder or <dump>/checkpoint/step-N."),
    ],
    out: Annotated[Path, typer.Argument(help="New Hugging Face folder to write.")],
    dtype: DTypeOpt = DType.auto,
    model: Annotated[
        str | None, typer.Option("--model", help="Model family, when CKPT does not say.")
    ] = None,
    flavor: Annotated[
        str | None, typer.Option("--flavor", help="Flavor, when CKPT does not say.")
    ] = None,
    max_shard_gb: Annotated[
        float, typer.Option("--max-shard-gb", help="Largest safetensors file, in GiB.", min=0.001)
    ] = 5.0,
) -> None:
    """Write a titan checkpoint's model as config.json + safetensors for transformers."""
    from titan.models.convert import convert_titan_to_hf

    done = convert_titan_to_hf(
        ckpt,
        out,
        _registry(),
        dtype.value,
        model=model,
        flavor=flavor,
        max_shard_bytes=int(max_shard_gb * 1024**3),
    )
    _out.print(
        f"wrote {out}: {done.family}, {done.parameters:,} parameters, {done.dtype}\n"
        f"load it: transformers.LlamaForCausalLM.from_pretrained({str(out)!r})"
    )
