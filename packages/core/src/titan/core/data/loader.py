"""Build the training (and validation) data loader for one data-parallel rank.

The loader is torchdata's ``StatefulDataLoader``: a ``DataLoader`` whose
``state_dict`` holds the position of the dataset in every worker, so the
trainer can checkpoint it and a resumed run gets exactly the batch an
uninterrupted run would have had next.

Which data: ``[data] sources`` when set (a weighted mixture), else
torchtitan's ``training.dataset`` / ``training.dataset_path``. Validation
reads ``[validation] dataset_path`` / ``dataset`` when set, else the
validation split of the training sources. A folder written by ``titan data
prepare`` is read as tokens (no tokenization at all).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from titan.core.data.sources import SourceSpec, dataset_location, parse_source
from titan.core.errors import ConfigError
from titan.core.tokenizers import Tokenizer


@dataclass(frozen=True)
class DataPlan:
    """What one loader reads, resolved from the config (no I/O yet)."""

    sources: list[str]
    weights: list[float]
    text_columns: list[str]
    split: str
    explicit: bool  # the sources were named for this split (a validation path)
    seq_len: int
    batch_size: int


def check_data_config(config: Any) -> None:
    """Shape checks of ``[data]`` that need no file access.

    Run before launch (from the plugins' ``titan_validate_config``), because
    paths may only exist on the cluster while these mistakes exist everywhere.
    """
    d = config.data
    if d.weights and len(d.weights) != max(len(d.sources), 1):
        raise ConfigError(
            f"data.weights has {len(d.weights)} entries but there are {max(len(d.sources), 1)} "
            "sources (data.sources); give one weight per source"
        )
    if any(w <= 0 for w in d.weights):
        raise ConfigError(f"data.weights must all be positive, got {d.weights}")
    if d.text_columns and len(d.text_columns) != max(len(d.sources), 1):
        raise ConfigError(
            f"data.text_columns has {len(d.text_columns)} entries for "
            f"{max(len(d.sources), 1)} sources; give one column per source or use data.text_column"
        )
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be 0 or more, got {d.num_workers}")


def check_validation_config(config: Any) -> None:
    """Shape checks of ``[validation]`` (see :func:`check_data_config`)."""
    v = config.validation
    if v.eval_interval <= 0:
        raise ConfigError(f"validation.eval_interval must be positive, got {v.eval_interval}")
    if v.steps == 0 or v.steps < -1:
        raise ConfigError(
            f"validation.steps must be positive, or -1 for the whole split; got {v.steps}"
        )
    for key in ("local_batch_size", "seq_len"):
        if getattr(v, key) < 0:
            raise ConfigError(f"validation.{key} must be 0 (the training value) or positive")


def check_data_here(config: Any) -> None:
    """Checks of the data that need this machine's files or network, before launch.

    For backends whose ranks run on this machine (local): a missing folder or an
    unreachable Hub would otherwise be found by every rank after the model build.
    Cheap only: local paths are listed, the Hub is tried once; remote (s3://)
    and pre-tokenized sources are left to the ranks.
    """
    import os

    from titan.core.data.sources import hub_unreachable, local_files

    splits = ["train", "validation"] if getattr(config.validation, "enable", False) else ["train"]
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    for split in splits:
        plan = plan_data(config, split if split == "train" else config.validation.split)
        for spec in _specs(config, plan):
            if spec.kind == "local":
                local_files(spec, plan.split, plan.explicit)
            elif spec.kind == "hub" and not offline:
                why_not = hub_unreachable()
                if why_not:
                    raise ConfigError(
                        f"dataset '{spec.location}' is not a local file or folder, and the "
                        f"Hugging Face Hub cannot be reached for it ({why_not}); fix the path, "
                        "or download it where there is a network and set "
                        "training.dataset_path to the files"
                    )


def plan_data(config: Any, split: str = "train") -> DataPlan:
    """Resolve which sources, columns and shapes the ``split`` loader uses."""
    d, t, v = config.data, config.training, config.validation
    train_sources = list(d.sources) or [dataset_location(t.dataset, t.dataset_path)]
    if split != "train" and (v.dataset_path or v.dataset):
        sources, explicit = [dataset_location(v.dataset, v.dataset_path)], True
    else:
        sources, explicit = train_sources, False
    n = len(sources)
    same_as_train = sources is train_sources
    weights = list(d.weights) if d.weights and same_as_train else [1.0] * n
    columns = list(d.text_columns) if d.text_columns and same_as_train else [d.text_column] * n
    if split == "train":
        seq_len, batch = t.seq_len, t.local_batch_size
    else:
        seq_len, batch = v.seq_len or t.seq_len, v.local_batch_size or t.local_batch_size
    return DataPlan(sources, weights, columns, split, explicit, seq_len, batch)


def _specs(config: Any, plan: DataPlan) -> list[SourceSpec]:
    specs = [parse_source(s, config.data.hub_config) for s in plan.sources]
    if any(s.kind == "tokens" for s in specs) and len(specs) > 1:
        raise ConfigError(
            "pre-tokenized folders (titan data prepare) cannot be mixed with other sources; "
            "prepare the mixture as one folder, or mix text sources only"
        )
    return specs


def open_split_documents(config: Any, plan: DataPlan) -> Any:
    """The documents of ``plan`` (mixed if several sources), unsharded, with a ``text`` column."""
    from titan.core.data.sources import mix_documents, open_documents

    docs = [
        open_documents(
            spec,
            plan.split,
            text_column=column,
            explicit=plan.explicit,
            text_sample_by=config.data.text_sample_by,
        )
        for spec, column in zip(_specs(config, plan), plan.text_columns, strict=True)
    ]
    return mix_documents(docs, plan.weights, config.training.seed)


def build_dataset(
    config: Any,
    tokenizer: Tokenizer,
    *,
    dp_rank: int = 0,
    dp_world_size: int = 1,
    split: str = "train",
    infinite: bool | None = None,
) -> Any:
    """The ``IterableDataset`` of (inputs, labels) windows one rank reads."""
    plan = plan_data(config, split)
    infinite = split == "train" if infinite is None else infinite
    specs = _specs(config, plan)
    if specs[0].kind == "tokens":
        from titan.core.data.tokens import TokenWindowDataset

        return TokenWindowDataset(
            Path(specs[0].location),
            tokenizer,
            plan.seq_len,
            plan.split,
            dp_rank=dp_rank,
            dp_world_size=dp_world_size,
            infinite=infinite,
        )
    from titan.core.data.packing import PackedTextDataset

    return PackedTextDataset(
        open_split_documents(config, plan),
        tokenizer,
        plan.seq_len,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        infinite=infinite,
    )


def build_dataloader(
    config: Any,
    tokenizer: Tokenizer,
    *,
    dp_rank: int = 0,
    dp_world_size: int = 1,
    split: str = "train",
    infinite: bool | None = None,
    num_workers: int | None = None,
) -> Any:
    """A torchdata ``StatefulDataLoader`` of (inputs, labels) batches; its state is checkpointable.

    ``split="train"`` is endless (epochs follow each other); other splits
    end after one pass. ``num_workers`` defaults to ``data.num_workers``.
    """
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    check_data_config(config)
    check_validation_config(config)
    plan = plan_data(config, split)
    dataset = build_dataset(
        config,
        tokenizer,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        split=split,
        infinite=infinite,
    )
    workers = config.data.num_workers if num_workers is None else num_workers

    class ResumableDataLoader(StatefulDataLoader):
        """Also resumes a state saved with another ``data.num_workers``.

        torchdata's state holds one position per worker and refuses (with an
        ``AssertionError``) a state of another worker count. The stream of
        another worker count is another interleaving of the rank's documents,
        so no saved position fits it; the loader instead skips as many batches
        as the old one had yielded: the same number of sequences is consumed,
        the same documents exactly when every document is one window long, and
        the next checkpoint holds positions of the new layout. The trainer does
        the same when the data-parallel degree changes (docs/data.md).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.skip_batches = 0

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            saved = saved_num_workers(state_dict)
            if saved is None or saved == self.num_workers:
                super().load_state_dict(state_dict)
                return
            self.skip_batches = batches_yielded(state_dict)
            if dp_rank == 0 and os.environ.get("RANK", "0") == "0":
                print(
                    f"data.num_workers changed since the checkpoint ({saved} -> "
                    f"{self.num_workers}): each rank skips the {self.skip_batches} batches it "
                    "had read, to continue after them",
                    file=sys.stderr,
                    flush=True,
                )

        def __iter__(self) -> Any:
            it = super().__iter__()
            skip, self.skip_batches = self.skip_batches, 0
            for _ in range(skip):
                next(it)
            return it

    return ResumableDataLoader(
        dataset,
        batch_size=plan.batch_size,
        num_workers=workers,
        pin_memory=config.data.pin_memory and torch.cuda.is_available(),
    )


def saved_num_workers(state: dict[str, Any]) -> int | None:
    """The ``num_workers`` of the loader that saved ``state`` (torchdata's layout), if known."""
    if "_num_yielded" in state:  # single-process loader
        return 0
    snapshot = state.get("_snapshot")
    if isinstance(snapshot, dict) and isinstance(snapshot.get("_worker_snapshots"), dict):
        return len(snapshot["_worker_snapshots"])
    return None


def batches_yielded(state: dict[str, Any]) -> int:
    """Batches the loader that saved ``state`` had yielded."""
    if "_num_yielded" in state:
        return int(state["_num_yielded"])
    snapshot = state["_snapshot"]
    return int(snapshot.get("_snapshot_step", 0)) + int(state.get("_steps_since_snapshot", 0))


def skip_consumed(data: Any, samples: int, dp_degree: int, local_batch_size: int) -> int:
    """Resumed with another data-parallel layout: skip this rank's share of the data seen.

    The checkpoint's loader positions belong to the old ranks' shards. Each new rank
    skips ``samples / new dp degree`` sequences of its own shard, so the run goes on at
    the same place in the data: exactly when every document is one window long,
    approximately otherwise (sequences packed across shard boundaries may be seen twice
    or skipped). Returns the batches skipped.
    """
    batches = (samples // dp_degree) // local_batch_size
    for _ in range(batches):
        next(data)
    return batches
