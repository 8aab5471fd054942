"""`titan data prepare`: tokenize a dataset to disk once, for runs that should not tokenize.

Reads the same config as ``titan run`` (dataset, mixture, text column,
tokenizer), tokenizes each split with a progress bar and writes token
shards plus an index (see ``titan.core.data.tokens``). Training then reads
them with ``--training.dataset_path=<output>``: no tokenizer work on the
training machines, and resume stays exact.

Also checks the ``[data]`` and ``[validation]`` sections before launch.
"""

# No `from __future__ import annotations` here: typer reads the command's annotations at
# run time, and `typer` is imported inside titan_add_commands, not at module level.
from pathlib import Path
from typing import Annotated, Any

from titan.core import hookimpl

AUTOLOAD = True


@hookimpl
def titan_validate_config(config: Any, active: frozenset[str]) -> None:
    from titan.core.data.loader import check_data_config

    check_data_config(config)


@hookimpl
def titan_add_commands(app: Any) -> None:
    import typer

    data_app = typer.Typer(help="Prepare datasets.", no_args_is_help=True)

    @data_app.command(
        "prepare",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        options_metavar="[CONFIG.toml] --output DIR [OPTIONS] [--section.key=value ...]",
    )
    def prepare(
        ctx: typer.Context,
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Folder to write the tokens to.")
        ],
        split: Annotated[
            str,
            typer.Option(
                "--split",
                help="Comma-separated splits; a split the data lacks is skipped unless named alone.",
            ),
        ] = "train,validation",
        shard_tokens: Annotated[
            int, typer.Option("--shard-tokens", min=1, help="Tokens per .npy shard file.")
        ] = 100_000_000,
        plugins: Annotated[
            str, typer.Option("--plugins", "-p", help="Plugins, as for titan run.")
        ] = "",
    ) -> None:
        """Tokenize the configured dataset into DIR; then train with --training.dataset_path=DIR.

        Uses the config's dataset (training.dataset / dataset_path, data.sources) and
        tokenizer (model.tokenizer_path); any key can be overridden as in `titan run`.
        """
        from titan.core.cli_common import split_args
        from titan.core.launch import prepare_job

        config_path, overrides = split_args(ctx.args)
        names = [s.strip() for s in plugins.split(",") if s.strip()]
        job = prepare_job(config_path, names, overrides)
        splits = [s.strip() for s in split.split(",") if s.strip()]
        prepare_splits(job.config, output, splits, shard_tokens)

    app.add_typer(data_app, name="data")


def prepare_splits(config: Any, output: Path, splits: list[str], shard_tokens: int) -> None:
    """Tokenize each of ``splits`` into ``output``, showing progress on the terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from titan.core.data.loader import open_split_documents, plan_data
    from titan.core.errors import ConfigError
    from titan.core.quiet import quiet_library_noise
    from titan.core.tokenizers import load_tokenizer
    from titan.core.tokenizers.base import resolve_tokenizer_file

    quiet_library_noise()
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    tokenizer = load_tokenizer(config.model.tokenizer_path)
    for name in splits:
        plan = plan_data(config, name)
        try:
            documents = open_split_documents(config, plan)
        except ConfigError as exc:
            if len(splits) > 1 and name != "train":
                console.print(f"[dim]note:[/] skipped split '{name}': {exc}")
                continue
            raise
        from titan.core.data.tokens import write_token_split  # numpy + torch: only when needed

        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[docs]:,} documents  {task.fields[tokens]:,} tokens"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(f"tokenizing {name}", total=None, docs=0, tokens=0)

            def update(docs: int, tokens: int, task: Any = task) -> None:
                if docs % 64 == 0:
                    progress.update(task, docs=docs, tokens=tokens)

            summary = write_token_split(
                (doc["text"] for doc in documents),
                tokenizer,
                output,
                name,
                tokenizer_path=str(resolve_tokenizer_file(config.model.tokenizer_path)),
                shard_tokens=shard_tokens,
                on_document=update,
            )
            progress.update(
                task, docs=summary.documents, tokens=summary.tokens, total=1, completed=1
            )
        console.print(
            f"{name}: {summary.documents:,} documents, {summary.tokens:,} tokens in "
            f"{len(summary.shards)} shard(s) -> {output}"
        )
    console.print(f"train with: titan run --training.dataset_path={output}")
