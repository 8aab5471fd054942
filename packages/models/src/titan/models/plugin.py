"""Llama 2 and Llama 3 families, and `titan convert` (always active).

Torch-free at import time: the families name their builder as an import
string, and the convert commands import torch inside their bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from titan.core import hookimpl
from titan.core.errors import ConfigError
from titan.core.registry import ModelFamily, ModelRegistry
from titan.models.llama.args import LLAMA2_FLAVORS, LLAMA3_FLAVORS, LlamaArgs

if TYPE_CHECKING:
    import typer

    from titan.core.config.job import JobConfig

AUTOLOAD = True

_BUILDER = "titan.models.llama.model:build_llama"
_ARGS_FROM_DICT = "titan.models.llama.args:LlamaArgs.from_dict"
_PARAMETER_COUNT = "titan.models.llama.args:parameter_count"


@hookimpl
def titan_register_models(registry: ModelRegistry) -> None:
    registry.add_family(
        ModelFamily(
            "llama3",
            dict(LLAMA3_FLAVORS),
            _BUILDER,
            "Llama 3 / 3.1 (GQA, rope theta 500000)",
            args_from_dict=_ARGS_FROM_DICT,
            parameter_count=_PARAMETER_COUNT,
        )
    )
    registry.add_family(
        ModelFamily(
            "llama2",
            dict(LLAMA2_FLAVORS),
            _BUILDER,
            "Llama 2 (rope theta 10000)",
            args_from_dict=_ARGS_FROM_DICT,
            parameter_count=_PARAMETER_COUNT,
        )
    )


@hookimpl
def titan_add_commands(app: typer.Typer) -> None:
    from titan.models.commands import convert_app

    app.add_typer(convert_app, name="convert")


@hookimpl
def titan_validate_config(config: JobConfig, active: frozenset[str]) -> None:
    """Check ``checkpoint.initial_load_path`` before launch: it exists, and fits the model.

    A converted checkpoint records its args (titan_model.json); comparing them
    with the run's model here turns a shape-mismatch traceback deep inside DCP
    into one line that names the flavor to use.
    """
    path = getattr(config.checkpoint, "initial_load_path", "")
    if not path:
        return
    folder = Path(path)
    if not (folder / ".metadata").is_file():
        raise ConfigError(
            f"checkpoint.initial_load_path '{path}' is not a checkpoint folder (no .metadata); "
            "point it at the output of `titan convert hf-to-titan` or a checkpoint/step-N folder"
        )
    from titan.models.dcp_files import read_model_file

    info = read_model_file(folder)
    if info is None:
        return
    try:
        saved = LlamaArgs.from_dict(info["args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"'{folder / 'titan_model.json'}' holds no valid Llama args ({exc}); "
            "re-run `titan convert hf-to-titan`"
        ) from None
    run = _run_args(config)
    if not isinstance(run, LlamaArgs):
        return
    diff = {
        k: (v, run.architecture()[k])
        for k, v in saved.architecture().items()
        if v != run.architecture()[k]
    }
    if diff:
        shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in list(diff.items())[:3])
        use = info.get("flavor") or str(folder / "titan_model.json")
        raise ConfigError(
            f"checkpoint.initial_load_path '{path}' holds a different model than "
            f"{config.model.name}/{config.model.flavor} ({shown}); "
            f"set --model.name={info['family']} --model.flavor={use}"
        )


def _run_args(config: JobConfig) -> object:
    """The model args this run will build (flavor plus the model.vocab_size override)."""
    registry = ModelRegistry()
    from titan.core.plugins import load_plugins

    load_plugins().pm.hook.titan_register_models(registry=registry)
    args = registry.get(config.model.name).flavor(config.model.flavor)
    if config.model.vocab_size and hasattr(args, "with_vocab"):
        args = args.with_vocab(config.model.vocab_size)
    return args
