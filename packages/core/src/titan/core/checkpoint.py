"""Checkpoints with torch.distributed.checkpoint (DCP): save, find the newest, resume.

Layout: ``<dump_folder>/<checkpoint.folder>/step-<N>/``. A checkpoint is
written to ``step-<N>.tmp`` and renamed as soon as it is complete, so a
folder named ``step-<N>`` is always complete. Complete means DCP's index,
``.metadata``, exists: DCP's coordinator writes it (to a temporary name,
then renamed) only after every rank's data is written. A crash between that
moment and the rename leaves a complete ``.tmp`` folder, which the next run
publishes; a ``.tmp`` folder without ``.metadata`` is half-written, and the
next run deletes it. An asynchronous save is published by a background
thread on rank 0 the moment it completes, not at the next save.

A save that fails (disk full, folder gone) removes its half-written folder,
keeps every earlier checkpoint, and raises :class:`CheckpointSaveError`
(one line, non-zero exit).

DCP stores each rank's shards plus a global index, so a checkpoint written
by N ranks loads into M ranks: model and optimizer tensors are resharded on
load. Per-rank state (the data loader's position in its shard) is stored
under a key naming the rank and world size; it only loads into the same
data-parallel layout. With another layout it is reported in
``CheckpointManager.skipped_states`` and the trainer finds its place in the
data from the number of sequences consumed instead.

Loading never unpickles arbitrary objects: tensors are read by DCP with
``weights_only``, non-tensor values with ``torch.load(weights_only=True)``,
and the checkpoint index (``.metadata``) through an unpickler that accepts
only DCP's own metadata classes (:mod:`titan.core.checkpoint_reading`).

This module is the folder and :class:`CheckpointManager`; what is saved of the model,
optimizer and data loader is in :mod:`titan.core.checkpoint_states`, and the one-line
errors of a failed load or save in :mod:`titan.core.checkpoint_errors`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from titan.core.checkpoint_errors import (
    CheckpointError,
    CheckpointSaveError,
    load_error,
    save_cause,
)
from titan.core.checkpoint_reading import (
    distributed,
    quiet_single_process,
    read_metadata,
    read_state,
    safe_load,
    saved_keys,
)
from titan.core.checkpoint_states import RankLocalState
from titan.core.errors import ConfigError
from titan.core.folders import complete_checkpoints

# What code outside core imports from here (titan.models, titan.core.testing, plugins).
__all__ = [
    "REQUIRED_STATES",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointSaveError",
    "quiet_single_process",
    "read_metadata",
    "read_state",
    "safe_load",
]

# DCP warns on every save without a process group, also from async saves' threads, which
# quiet_single_process() cannot reach; one process is a normal case here.
warnings.filterwarnings("ignore", message=".*assuming the intent is to.*single process")

_TMP_DIR = re.compile(r"^step-(\d+)\.tmp$")

# States the trainer cannot run without; anything else (plugins' extra state)
# may be missing from an older checkpoint and is then left as initialised.
REQUIRED_STATES = frozenset({"model", "optimizer", "lr_scheduler", "train_state"})


def _barrier() -> None:
    if distributed():
        dist.barrier()


def _is_main() -> bool:
    return not distributed() or dist.get_rank() == 0


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the new directory entry reaches the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointManager:
    """Saves every ``interval`` steps and at the end; resumes from the newest complete one.

    With ``async_mode="async"`` a save copies the state to CPU memory and
    writes it in a background thread (on its own gloo process group, so its
    collectives cannot interleave with training's). Rank 0 renames the folder
    to ``step-<N>`` the moment the write has finished on every rank (DCP's
    ``.metadata`` is written last, by rank 0, after all ranks' data); the next
    save or :meth:`close` waits for it and reports a failure.
    """

    def __init__(
        self,
        folder: Path,
        states: dict[str, Any],
        *,
        enabled: bool,
        interval: int,
        keep_latest_k: int = 0,
        async_mode: str = "disabled",
        initial_load_path: str = "",
        on_saved: Callable[[int, Path], None] | None = None,
    ) -> None:
        self.folder = folder
        # Called on every rank once checkpoint ``step`` is complete and published at ``path``.
        self.on_saved = on_saved
        self.initial_load_path = initial_load_path
        self.states = states
        self.enabled = enabled
        self.interval = interval
        self.keep_latest_k = keep_latest_k
        self.async_mode = async_mode
        self.loaded_from: Path | None = None
        self.skipped_states: list[str] = []
        self._pending: tuple[int, Future, threading.Thread | None] | None = None
        self._publish_error: BaseException | None = None
        self._published_step: int | None = None
        self._cpu_group: Any = None  # async saves' collectives, and agreeing on failures
        if enabled and distributed():
            self._cpu_group = dist.new_group(backend="gloo")

    # -- load ---------------------------------------------------------------

    def load(self, step: int = -1) -> int:
        """Restore the states from checkpoint ``step`` (-1: newest). Returns the step, 0 if none."""
        if not self.enabled:
            return self._load_initial()
        self._remove_unfinished()
        found = dict(complete_checkpoints(self.folder))
        if not found:
            if step not in (-1, 0):
                raise ConfigError(
                    f"checkpoint.load_step is {step} but '{self.folder}' holds no complete "
                    "checkpoint; set checkpoint.load_step = -1 or fix checkpoint.folder"
                )
            return self._load_initial()
        chosen = max(found) if step == -1 else step
        if chosen not in found:
            raise ConfigError(
                f"no complete checkpoint for step {chosen} in '{self.folder}' (have: "
                f"{', '.join(map(str, sorted(found)))}); set checkpoint.load_step"
            )
        path = found[chosen]
        with self._load_errors(path):
            safe_load(self._loadable_states(path), path)
        self.loaded_from = path
        return chosen

    @contextlib.contextmanager
    def _load_errors(self, path: Path) -> Iterator[None]:
        """A checkpoint that cannot be read becomes one clear :class:`CheckpointError`."""
        try:
            yield
        except (pickle.UnpicklingError, EOFError, CheckpointException) as exc:
            found = dict(complete_checkpoints(self.folder))
            step = next((s for s, p in found.items() if p == path), -1)
            raise load_error(path, step, sorted(found), exc) from None

    def add_states(self, states: dict[str, Any]) -> list[str]:
        """Add optional states (plugins') after :meth:`load`, restoring them from the same checkpoint.

        From now on they are saved with every checkpoint. Returns the names the
        resumed checkpoint holds no state for (they keep their initial values);
        empty on a run that did not resume.
        """
        taken = set(states) & set(self.states)
        if taken:
            raise CheckpointError(f"checkpoint state names {sorted(taken)} are already taken")
        fresh: list[str] = []
        if self.loaded_from is not None and states:
            with self._load_errors(self.loaded_from):
                tops = {k.split(".", 1)[0] for k in saved_keys(self.loaded_from)}
                fresh = [name for name in states if name not in tops]
                present = {n: o for n, o in states.items() if n in tops}
                if present:
                    safe_load(present, self.loaded_from)
        self.states.update(states)
        return fresh

    def _load_initial(self) -> int:
        """Only the model weights of ``initial_load_path`` (a converted HF model); step 0."""
        if self.initial_load_path:
            safe_load({"model": self.states["model"]}, self.initial_load_path)
        return 0

    def _loadable_states(self, path: Path) -> dict[str, Any]:
        """The states this checkpoint holds; a clear error for missing required ones.

        Optional states it lacks (a plugin's, or a rank-local state saved with
        another rank layout) are listed in ``skipped_states`` for the caller.
        """
        keys = saved_keys(path)
        tops = {k.split(".", 1)[0] for k in keys}
        to_load: dict[str, Any] = {}
        self.skipped_states = []
        for name, obj in self.states.items():
            if isinstance(obj, RankLocalState):
                if not any(k.startswith(f"{name}.{obj.key}") for k in keys):
                    self.skipped_states.append(name)
                    continue
            elif name not in tops:
                if name in REQUIRED_STATES:
                    raise CheckpointError(
                        f"checkpoint '{path}' has no '{name}' state (it holds: "
                        f"{', '.join(sorted(tops))}); it is not a titan training checkpoint, "
                        "or was written by an incompatible version; point checkpoint.folder elsewhere"
                    )
                self.skipped_states.append(name)
                continue
            to_load[name] = obj
        return to_load

    def _remove_unfinished(self) -> None:
        """Publish complete ``step-<N>.tmp`` folders (crash before the rename); delete the rest."""
        if _is_main() and self.folder.is_dir():
            for p in self.folder.iterdir():
                m = _TMP_DIR.match(p.name)
                if not m:
                    continue
                final = self.folder / f"step-{m.group(1)}"
                if (p / ".metadata").is_file() and not final.exists():
                    p.rename(final)
                    _fsync_dir(self.folder)
                else:
                    shutil.rmtree(p, ignore_errors=True)
        _barrier()

    # -- save ---------------------------------------------------------------

    def should_save(self, step: int, last: bool) -> bool:
        return self.enabled and (last or step % self.interval == 0)

    def save(self, step: int, last: bool = False) -> Path:
        """Write checkpoint ``step``; async unless it is the ``last`` one of the run."""
        self.wait()
        final, tmp = self._paths(step)
        error: BaseException | None = None
        if _is_main():
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                error = exc
        self._all_ok(step, error)
        try:
            if self.async_mode == "async" and not last:
                with quiet_single_process():
                    future = dcp.async_save(
                        self.states,
                        checkpoint_id=str(tmp),
                        process_group=self._cpu_group,
                        no_dist=not distributed(),
                    )
                publisher = None
                if _is_main():
                    publisher = threading.Thread(
                        target=self._publish_when_done,
                        args=(step, future),
                        name=f"titan-publish-step-{step}",
                        daemon=True,
                    )
                    publisher.start()
                self._pending = (step, future, publisher)
                return final
            with quiet_single_process():
                dcp.save(self.states, checkpoint_id=str(tmp), no_dist=not distributed())
        except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
            self._failed(step, exc)
        _barrier()
        if _is_main():
            try:
                self._rename(step)
            except OSError as exc:
                error = exc
        self._all_ok(step, error)
        self._saved(step)
        return final

    def _saved(self, step: int) -> None:
        """Checkpoint ``step`` is complete and published on every rank: say so."""
        self._published_step = step
        if self.on_saved is not None:
            self.on_saved(step, self._paths(step)[0])

    def _all_ok(self, step: int, error: BaseException | None) -> None:
        """Every rank learns whether any rank failed (so none waits for a rank that left)."""
        failed = error is not None
        if distributed():
            flag = torch.tensor([int(failed)], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._cpu_group)
            failed = bool(flag.item())
        if failed:
            self._failed(step, error or RuntimeError("rank 0 could not write the checkpoint"))

    def save_for_stop(self, step: int) -> Path:
        """A complete checkpoint of ``step`` before the run stops on request (synchronous).

        Reuses a save of this very step (an async one is waited for) instead of writing twice.
        """
        if self._pending is not None and self._pending[0] == step:
            self.wait()
        if self._published_step != step:
            self.save(step, last=True)
        return self._paths(step)[0]

    def _publish_when_done(self, step: int, future: Future) -> None:
        """Rank 0, background: rename the folder the moment the async save completes."""
        try:
            future.result()
            self._rename(step)
        except BaseException as exc:  # reported by wait(), in the training thread
            self._publish_error = exc

    def wait(self) -> None:
        """Finish a pending async save (it may already be published); raise if it failed."""
        if self._pending is None:
            return
        step, future, publisher = self._pending
        self._pending = None
        error: BaseException | None = None
        try:
            future.result()
        except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
            error = exc
        if publisher is not None:
            publisher.join()
            if self._publish_error is not None and error is None:
                error = self._publish_error
            self._publish_error = None
        self._all_ok(step, error)
        self._saved(step)

    def close(self) -> None:
        self.wait()

    def _paths(self, step: int) -> tuple[Path, Path]:
        return self.folder / f"step-{step}", self.folder / f"step-{step}.tmp"

    def _rename(self, step: int) -> None:
        """``step-<N>.tmp`` -> ``step-<N>`` (atomic on POSIX), made durable; prune old ones."""
        final, tmp = self._paths(step)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(self.folder)
        self._prune()

    def _failed(self, step: int, exc: BaseException) -> None:
        """A save failed: drop its half-written folder, keep the others, raise one clear line."""
        _, tmp = self._paths(step)
        if _is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        kept = complete_checkpoints(self.folder)
        previous = (
            f"the newest complete checkpoint, {kept[-1][1]}, is intact"
            if kept
            else ("there is no earlier checkpoint")
        )
        raise CheckpointSaveError(
            f"could not write checkpoint step-{step} in '{self.folder}': {save_cause(exc)}; "
            f"{previous}; free space or fix the folder, then run the same command again to "
            "resume from it"
        ) from exc

    def _prune(self) -> None:
        if self.keep_latest_k <= 0:
            return
        for _, path in complete_checkpoints(self.folder)[: -self.keep_latest_k]:
            shutil.rmtree(path, ignore_errors=True)
