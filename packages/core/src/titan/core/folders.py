"""The run's folders, checked before anything is built, and what a rerun into one will do.

A typo in ``job.dump_folder`` (a path through a file, a read-only place)
used to surface after the model was built and trained, at the first
checkpoint or metrics write. :func:`check_folders` finds it first, as one
line (exit 2). :func:`rerun_notes` says what happens when the folder already
holds a run: checkpoints that this run ignores (checkpointing off), a
finished run, or ``training.steps`` below the saved step (an error: nothing
to train). Torch-free: runs in the CLI before anything launches.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from titan.core.errors import ConfigError

_STEP = re.compile(r"^step-(\d+)$")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_folder(key: str, value: str, path: Path) -> None:
    """One folder the run will write into: it is or can become a writable directory."""
    if not value.strip():
        raise ConfigError(f"config key '{key}' is empty; set it to a folder path (e.g. ./outputs)")
    path = Path(os.path.normpath(path))
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{key} '{path}' is a file, not a folder; choose another path or move the file away"
        )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(
            f"{key} '{path}' lies under '{existing}', which is a file, not a folder; "
            "choose another path"
        )
    try:  # the real test (permissions, read-only file systems, root's exceptions included)
        fd, probe = tempfile.mkstemp(prefix=".titan-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if existing == path else f" (its nearest existing parent, '{existing}')"
        raise ConfigError(
            f"{key} '{path}' is not writable{where}: {exc.strerror or exc}; choose a folder you "
            "can write to or fix its permissions"
        ) from None


def check_folders(config: Any) -> None:
    """Every folder the run writes into, before the model is built (one line, exit 2)."""
    dump = Path(config.job.dump_folder)
    check_folder("job.dump_folder", config.job.dump_folder, dump)
    if config.checkpoint.enable_checkpoint:
        check_folder("checkpoint.folder", config.checkpoint.folder, dump / config.checkpoint.folder)
    if config.metrics.enable_tensorboard:
        check_folder(
            "metrics.save_tb_folder",
            config.metrics.save_tb_folder,
            dump / config.metrics.save_tb_folder,
        )


def complete_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``folder``, oldest first.

    A checkpoint is a ``step-<N>`` folder; it is complete once DCP's
    ``.metadata`` is in it (written last). Torch-free, so the CLI's checks
    before launch and the trainer list checkpoints the same way.
    """
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP.match(p.name)
        if m and p.is_dir() and (p / ".metadata").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


RUN_IDENTITY = (
    "model.name",
    "model.flavor",
    "model.vocab_size",
    "training.seq_len",
    "training.local_batch_size",
    "training.global_batch_size",
    "training.dataset",
    "training.dataset_path",
    "training.seed",
    "data.sources",
)
"""The keys that make a checkpoint another run's when they differ: resuming it would train a
different model, or the same one on other data or batches (the step count may change:
raising it continues a run)."""


def _another_run(dump: Path, config: Any) -> str:
    """How the run whose ``job_config.toml`` is in ``dump`` differs from ``config`` ("" if not).

    Keys the folder's file does not hold are not compared (a file from an
    older titan). The file is the one titan wrote at the run's launch.
    """
    import tomllib

    try:
        saved = tomllib.loads((dump / "job_config.toml").read_text())
    except (OSError, ValueError):
        return ""
    differences = []
    for key in RUN_IDENTITY:
        section, name = key.split(".")
        if section not in saved or name not in saved[section] or section not in config:
            continue
        there, here = saved[section][name], getattr(getattr(config, section), name, None)
        if there != here:
            differences.append(f"{key} {there!r} there, {here!r} here")
    return "; ".join(differences[:3])


def saved_steps(folder: Path) -> list[int]:
    """Steps of the complete checkpoints in ``folder``, oldest first."""
    return [step for step, _ in complete_checkpoints(folder)]


def _logged_steps(path: Path) -> int:
    """The highest step in a metrics.jsonl (0 if none)."""
    if not path.is_file():
        return 0
    top = 0
    for m in re.finditer(r'^\{"step": (\d+)', path.read_text(errors="replace"), re.M):
        top = max(top, int(m.group(1)))
    return top


def rerun_notes(config: Any) -> list[str]:
    """What a run into a folder that already holds a run will do (raises if nothing to train)."""
    dump = Path(config.job.dump_folder)
    ckpt = config.checkpoint
    steps = saved_steps(dump / ckpt.folder)
    notes: list[str] = []
    start = 0
    if steps and not ckpt.enable_checkpoint:
        notes.append(
            f"'{dump / ckpt.folder}' holds checkpoints (newest: step {steps[-1]}) but "
            "checkpoint.enable_checkpoint is false: this run starts from step 0 and leaves them "
            "alone; pass --checkpoint.enable_checkpoint=true to resume from them"
        )
    elif steps and ckpt.load_step == -1:
        start = steps[-1]
        other = _another_run(dump, config)
        if other:
            raise ConfigError(
                f"'{dump / ckpt.folder}' holds checkpoints (newest: step {start}) of another run "
                f"({other}), which this job would resume; use another --job.dump_folder, or "
                "set the keys as that run had them to continue it"
            )
        if start > config.training.steps:
            raise ConfigError(
                f"training.steps is {config.training.steps} but '{dump / ckpt.folder}' already "
                f"holds step {start}: nothing to train; raise training.steps to continue, set "
                "checkpoint.load_step to an earlier step, or use another job.dump_folder"
            )
        if start == config.training.steps:
            notes.append(
                f"the run in '{dump}' is already complete (checkpoint step {start} = "
                "training.steps): nothing to train; raise training.steps to continue"
            )
        else:
            notes.append(
                f"continues the run in '{dump}' from its checkpoint at step {start} to step "
                f"{config.training.steps} (another --job.dump_folder starts a new run)"
            )
    logged = _logged_steps(dump / "metrics.jsonl")
    if logged > start and start < config.training.steps:
        notes.append(
            f"metrics.jsonl already has rows up to step {logged}; this run starts after step "
            f"{start} and appends its rows for steps {start + 1}-{min(logged, config.training.steps)} "
            "again: for a step logged twice, the later row is this run's"
        )
    return notes
