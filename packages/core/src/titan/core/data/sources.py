"""Where documents come from: Hugging Face ``datasets``, streaming, from local files.

A dataset name titan bundles (``tinyshakespeare``) resolves to the copy
inside the package; anything else is a path to JSON-lines, parquet or text
files, or a folder of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from titan.core.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED = {"tinyshakespeare": ASSETS / "tinyshakespeare"}
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}


def resolve_files(dataset: str, dataset_path: str, split: str) -> tuple[str, list[str]]:
    """Return (HF builder name, files) for one split of a dataset."""
    if dataset_path:
        root = Path(dataset_path)
    elif dataset in BUNDLED:
        root = BUNDLED[dataset]
    else:
        root = Path(dataset)
    if not root.exists():
        raise ConfigError(
            f"dataset '{dataset}' not found at '{root}'; set training.dataset_path to a file or "
            f"folder of .jsonl/.parquet/.txt files (bundled: {', '.join(BUNDLED)})"
        )
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.iterdir() if p.suffix in _BUILDERS and split in p.stem)
        if not files and split == "train":
            files = sorted(p for p in root.iterdir() if p.suffix in _BUILDERS)
    if not files:
        raise ConfigError(f"no .jsonl/.parquet/.txt files for split '{split}' in '{root}'")
    builders = {_BUILDERS.get(p.suffix) for p in files}
    if None in builders or len(builders) != 1:
        raise ConfigError(
            f"dataset files in '{root}' must all be one of {', '.join(_BUILDERS)}; got "
            + ", ".join(p.name for p in files)
        )
    return builders.pop(), [str(p) for p in files]


def load_documents(dataset: str, dataset_path: str, split: str = "train") -> Any:
    """An HF streaming ``IterableDataset`` of documents (dicts with a text column)."""
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    builder, files = resolve_files(dataset, dataset_path, split)
    return load_dataset(builder, data_files=files, split="train", streaming=True)
