"""Where documents come from: one string names a dataset, this module opens it.

A source string is one of (checked in this order):

* a prefix a plugin registered (``titan_register_data_sources``), resolved
  by that plugin to one of the forms below: the SageMaker backend's
  ``sm-channel:NAME`` is the folder of that input channel in the job's
  container;
* a URL with a scheme (``s3://bucket/prefix/``, ``gs://...``, ``file://...``):
  files read through fsspec (``s3://`` needs ``s3fs`` installed);
* an existing local file or folder: JSON lines, parquet, CSV, arrow or text
  files, or a folder of them (searched recursively);
* a Hugging Face Hub dataset name (``allenai/c4``, optionally ``allenai/c4:en``
  for its config), streamed.

Everything is opened as a Hugging Face *streaming* ``IterableDataset``:
nothing is downloaded or converted up front, and its ``state_dict`` tells
exactly where reading stopped (the basis of exact resume). Every opened
source is reduced to a single ``text`` column, so sources with different
schemas can be mixed; a missing column or an empty dataset is reported here,
in the main process, before any worker or training step starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from titan.core.errors import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUNDLED = {"tinyshakespeare": str(ASSETS / "tinyshakespeare")}
# torchtitan's dataset names, so its configs run unchanged (with a network).
TORCHTITAN_NAMES = {"c4": "allenai/c4:en", "c4_validation": "allenai/c4:en"}

TOKENS_INDEX = "titan_tokens.json"  # marks a folder written by `titan data prepare`

# File suffix (compression suffixes included) -> Hugging Face packaged builder.
BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".arrow": "arrow",
    ".txt": "text",
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?$")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string: what kind of place, and where."""

    kind: Literal["local", "remote", "hub", "tokens"]
    location: str
    hub_config: str | None = None
    label: str = ""

    def describe(self) -> str:
        return self.label or self.location


@dataclass
class DataSourceRegistry:
    """Source-string prefixes that plugins resolve (``sm-channel:NAME`` -> a folder).

    Filled through ``titan_register_data_sources`` when a job is prepared, in
    every process that reads data (the ranks prepare their job too).
    """

    schemes: dict[str, Callable[[str], str]] = field(default_factory=dict)

    def add(self, prefix: str, resolve: Callable[[str], str]) -> None:
        """``resolve(rest)`` turns ``prefix + rest`` into a path, URL or hub name, or raises
        a one-line ConfigError (a channel that is not there)."""
        known = self.schemes.get(prefix)
        if known is not None and getattr(known, "__qualname__", None) != resolve.__qualname__:
            from titan.core.errors import PluginError

            raise PluginError(
                f"data source prefix '{prefix}' is registered twice; uninstall or rename one"
            )
        self.schemes[prefix] = resolve


DATA_SOURCES = DataSourceRegistry()
"""The prefixes registered in this process."""


def dataset_location(dataset: str, dataset_path: str) -> str:
    """torchtitan's pair (``training.dataset``, ``training.dataset_path``) -> one source string."""
    if dataset_path:
        return dataset_path
    if dataset in BUNDLED:
        return BUNDLED[dataset]
    return TORCHTITAN_NAMES.get(dataset, dataset)


def _suffix_builder(name: str) -> str | None:
    lowered = name.lower()
    for comp in COMPRESSIONS:
        if lowered.endswith(comp):
            lowered = lowered[: -len(comp)]
            break
    return BUILDERS.get(PurePosixPath(lowered).suffix)


def parse_source(source: str, hub_config: str = "") -> SourceSpec:
    """Classify a source string (see the module docstring for the forms)."""
    if not source:
        raise ConfigError(
            "no dataset given; set training.dataset (or training.dataset_path / data.sources)"
        )
    for prefix, resolve in DATA_SOURCES.schemes.items():
        if source.startswith(prefix):
            where = resolve(source[len(prefix) :])
            return replace(parse_source(where), label=f"{source} ({where})")
    if "://" in source:
        return SourceSpec("remote", source)
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and (path / TOKENS_INDEX).is_file():
            return SourceSpec("tokens", str(path))
        return SourceSpec("local", str(path))
    looks_local = (
        source.startswith((".", "/", "~")) or _suffix_builder(source) is not None or "\\" in source
    )
    if looks_local or not _HUB_NAME.match(source):
        raise ConfigError(
            f"dataset '{source}' not found: no such file or folder; set training.dataset_path "
            "(or data.sources) to a file or folder of .jsonl/.json/.parquet/.csv/.txt files, "
            f"a Hugging Face Hub name{_prefixes()} or an s3:// URL (bundled: {', '.join(BUNDLED)})"
        )
    name, _, config = source.partition(":")
    return SourceSpec("hub", name, config or hub_config or None)


def _prefixes() -> str:
    return "".join(f", {p}..." for p in sorted(DATA_SOURCES.schemes))


# --- files ---------------------------------------------------------------------


def _words(relative: str) -> set[str]:
    return set(re.split(r"[^a-z]+", relative.lower()))


def _split_of(relative: str) -> str | None:
    """The split a file belongs to by the words in its path ("c4-train.0001" -> train)."""
    words = _words(relative)
    return next((split for split, names in SPLIT_WORDS.items() if words & set(names)), None)


def select_split_files(files: list[str], root: str, split: str, explicit: bool) -> list[str]:
    """The files of ``split`` among ``files`` (paths below ``root``).

    Files are assigned to a split by a word in their path (``train``,
    ``validation``/``valid``/``val``/``dev``, ``test``). Files naming no split
    belong to the training split, and to any split when the folder was given
    for that split explicitly (``validation.dataset_path``).
    """
    wanted = set(SPLIT_WORDS.get(split, (split,)))
    chosen = [f for f in files if _words(f[len(root) :]) & wanted]
    if not chosen and (split == "train" or explicit):
        chosen = [f for f in files if _split_of(f[len(root) :]) is None]
    return sorted(chosen)


def _builder_for(files: list[str], where: str) -> str:
    builders = {_suffix_builder(f) for f in files}
    if len(builders) != 1 or None in builders:
        raise ConfigError(
            f"the data files in '{where}' must all have one format ({', '.join(BUILDERS)}, "
            f"optionally compressed); got {', '.join(PurePosixPath(f).name for f in files[:8])}"
        )
    return builders.pop()  # type: ignore[return-value]


def local_files(spec: SourceSpec, split: str, explicit: bool) -> tuple[str, list[str]]:
    """(builder, files) of one split of a local file or folder."""
    root = Path(spec.location)
    if root.is_file():
        if split != "train" and not explicit:
            raise ConfigError(
                f"dataset '{root}' is a single file, so it has no '{split}' split; set "
                f"validation.dataset_path to a file of {split} data"
            )
        files = [str(root)]
    else:
        every = [str(p) for p in sorted(root.rglob("*")) if p.is_file() and _suffix_builder(p.name)]
        if not every:
            raise ConfigError(
                f"folder '{root}' holds no data files ({', '.join(BUILDERS)}); point "
                "training.dataset_path at the folder that holds them"
            )
        files = select_split_files(every, str(root), split, explicit)
        if not files:
            raise ConfigError(
                f"folder '{root}' has no files for the '{split}' split (file names must contain "
                f"'{split}'); name them so, or set validation.dataset_path to the {split} data"
            )
    return _builder_for(files, str(root)), files


def remote_files(spec: SourceSpec, split: str, explicit: bool) -> tuple[str, list[str]]:
    """(builder, URLs) of one split of a remote file or folder, listed through fsspec."""
    import fsspec

    url = spec.location
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        scheme = url.split("://", 1)[0]
        package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
        raise ConfigError(
            f"reading '{url}' needs the fsspec driver for {scheme}:// ({exc}); install it "
            f"(pip install {package.get(scheme, 'the matching fsspec package')})"
        ) from None
    try:
        if fs.isfile(path):
            listed = [path]
        else:
            listed = [p for p in sorted(fs.find(path)) if _suffix_builder(p)]
    except Exception as exc:  # every filesystem raises its own errors
        raise ConfigError(
            f"could not list '{url}': {type(exc).__name__}: {exc}; check the URL and credentials"
        ) from None
    if not listed:
        raise ConfigError(f"'{url}' holds no data files ({', '.join(BUILDERS)}); check the URL")
    files = listed if len(listed) == 1 else select_split_files(listed, path, split, explicit)
    if not files:
        raise ConfigError(f"'{url}' has no files for the '{split}' split; name them so")
    return _builder_for(files, url), [fs.unstrip_protocol(f) for f in files]


# --- opening -------------------------------------------------------------------


def hub_load_kwargs(name: str, config: str | None, split: str) -> dict[str, Any]:
    """The ``datasets.load_dataset`` arguments for streaming one split of a Hub dataset."""
    kwargs: dict[str, Any] = {"path": name, "split": split, "streaming": True}
    if config:
        kwargs["name"] = config
    return kwargs


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (one quick try), or None if it can.

    Without this, ``datasets`` retries each request five times with growing
    pauses: over a minute and a dozen log lines before the same conclusion.
    The endpoint is ``HF_ENDPOINT`` when set (a mirror), else huggingface.co.
    """
    import socket
    from urllib.parse import urlsplit

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return None


def _load_hub(spec: SourceSpec, split: str) -> Any:
    from datasets import load_dataset

    kwargs = hub_load_kwargs(spec.location, spec.hub_config, split)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why_not = None if offline else hub_unreachable()
    if why_not:
        raise ConfigError(
            f"dataset '{spec.location}' is not a local file or folder, and the Hugging Face Hub "
            f"cannot be reached for it ({why_not}); fix the path, or download it where there "
            "is a network and set training.dataset_path to the files"
        )
    try:
        return load_dataset(**kwargs)
    except (ConnectionError, OSError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "no network, or no access"
        raise ConfigError(
            f"dataset '{spec.location}' is not a local file or folder, and the Hugging Face Hub "
            f"could not be reached for it ({why}: {exc}); fix the path, or download it where "
            "there is a network and set training.dataset_path to the files"
        ) from None
    except ValueError as exc:  # bad split or config name
        raise ConfigError(
            f"Hugging Face dataset '{spec.location}' (config {spec.hub_config!r}, split '{split}')"
            f" cannot be loaded: {exc}; set data.hub_config or the split to one it has"
        ) from None
    except Exception as exc:  # DatasetNotFoundError and friends
        raise ConfigError(
            f"Hugging Face dataset '{spec.location}' cannot be loaded: {type(exc).__name__}: {exc};"
            " check the name (and HF_TOKEN for gated datasets)"
        ) from None


def open_documents(
    spec: SourceSpec,
    split: str,
    *,
    text_column: str = "text",
    explicit: bool = False,
    text_sample_by: str = "paragraph",
) -> Any:
    """One split of a source as a streaming ``IterableDataset`` with a single ``text`` column.

    ``explicit`` says the source was named for this split (a validation
    path), so files naming no split belong to it.
    """
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    if spec.kind == "tokens":
        raise ConfigError(
            f"'{spec.location}' holds pre-tokenized data (titan data prepare); it cannot be mixed "
            "with text sources or tokenized again: use it alone as training.dataset_path"
        )
    if spec.kind == "hub":
        ds = _load_hub(spec, split)
    else:
        builder, files = (local_files if spec.kind == "local" else remote_files)(
            spec, split, explicit
        )
        extra = {"sample_by": text_sample_by} if builder == "text" else {}
        try:
            ds = load_dataset(builder, data_files=files, split="train", streaming=True, **extra)
        except StopIteration:  # `datasets` peeks at the first rows to infer the columns
            raise _empty(spec, split) from None
        except Exception as exc:  # unreadable files surface as many different types
            raise ConfigError(
                f"cannot read dataset '{spec.describe()}' as {builder}: {type(exc).__name__}: "
                f"{exc}; check the files"
            ) from None
    first = _first_document(ds, spec, split)
    if text_column not in first:
        raise ConfigError(
            f"dataset '{spec.describe()}' has no text column '{text_column}' (its columns: "
            f"{', '.join(first) or 'none'}); set data.text_column (or data.text_columns) to the "
            "column holding the text"
        )
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    return ds.select_columns(["text"])


def _empty(spec: SourceSpec, split: str) -> ConfigError:
    return ConfigError(
        f"dataset '{spec.describe()}' ({split} split) is empty: it has no documents; "
        "point training.dataset_path at data that has some"
    )


def _first_document(ds: Any, spec: SourceSpec, split: str) -> dict[str, Any]:
    """Read one document now, so an empty or unreadable dataset fails before training."""
    try:
        return next(iter(ds))
    except StopIteration:
        raise _empty(spec, split) from None
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot read dataset '{spec.describe()}': {type(exc).__name__}: {exc}; check the files"
        ) from None


def mix_documents(datasets: list[Any], weights: list[float], seed: int) -> Any:
    """Interleave sources, each document drawn from source i with probability weights[i].

    A source that runs out starts over until every source has been read
    once (``all_exhausted``), so small sources are oversampled rather than
    dropped. The choice sequence comes from a seeded generator whose state is
    part of the dataset's ``state_dict``, so a mixture resumes exactly.
    """
    if len(datasets) == 1:
        return datasets[0]
    from datasets import interleave_datasets

    total = float(sum(weights))
    return interleave_datasets(
        datasets,
        probabilities=[w / total for w in weights],
        seed=seed,
        stopping_strategy="all_exhausted",
    )
