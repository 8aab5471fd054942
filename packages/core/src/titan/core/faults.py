"""Stop requests: SIGTERM, SIGUSR1 and SIGUSR2 stop every rank at the same step boundary.

Schedulers announce the end of a job with a signal (Slurm ``--signal``,
SageMaker spot interruptions, Kubernetes pod deletion: SIGTERM). The handler
only records the signal; the training loop asks :class:`StopAgreement` at
each step boundary whether *any* rank was signalled, writes a checkpoint and
raises :class:`StopRequested` (exit code 75, "run again to resume").

Why the ranks must agree: a signal reaches the ranks at slightly different
moments. A rank that stopped on its own while the others entered the next
step's collectives would leave them waiting until the collective timeout.

Why the agreement costs (almost) nothing per step: the flags are combined by
an all-reduce (MAX) of one CPU integer on a gloo group of its own, issued
asynchronously at one step boundary and read at the next. By then it has
long finished (the step's own collectives keep the ranks within a step of
each other), so the read does not wait, and it never touches the GPU stream
(no device-host synchronisation). The price is latency: ranks stop one step
after the step in which the first of them got the signal. With one process
there is no collective and the loop stops at the boundary right after the
signal. Measured cost: see docs/reliability.md.

A second signal while the checkpoint is written is recorded and otherwise
ignored, so it cannot interrupt the save. This module imports torch lazily:
the CLI imports it to map exit codes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from titan.core.errors import EXIT_STOPPED_RESUMABLE

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopRequested(Exception):
    """Raised at a step boundary after a stop signal, once the stop checkpoint is written.

    ``exit_code`` is :data:`EXIT_STOPPED_RESUMABLE` (75) when a checkpoint was
    written; without checkpointing the run cannot resume and the code is the
    shell's ``128 + signal``. ``message`` is one line for the user.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass
class _Received:
    """What the handler recorded: the first stop signal, when, and how many came."""

    signum: int = 0
    at: float = 0.0
    count: int = 0


_received = _Received()
_installed: dict[int, Any] = {}


def _handler(signum: int, _frame: Any) -> None:
    # Only record: no I/O, no locks, nothing that could interrupt a checkpoint being written.
    if not _received.signum:
        _received.signum = signum
        _received.at = time.monotonic()
    _received.count += 1


def install_stop_handlers() -> bool:
    """Route SIGTERM/SIGUSR1/SIGUSR2 to the stop flag. Idempotent; main thread only.

    Returns whether the handlers are in place (Python lets only the main
    thread install signal handlers; a trainer run in another thread, as some
    tests do, then simply never sees a stop request).
    """
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        _installed[sig] = signal.signal(sig, _handler)
    return True


def uninstall_stop_handlers() -> None:
    """Put back the handlers found before :func:`install_stop_handlers`, and clear the flag."""
    while _installed:
        sig, previous = _installed.popitem()
        signal.signal(sig, previous)
    reset_stop_request()


def ignore_further_stop_signals() -> None:
    """After the stop checkpoint: further stop signals are ignored while the process exits.

    Python's finalisation puts the default action (terminate) back for signals
    with a Python handler, so a repeated SIGTERM during exit would turn exit 75
    into a kill; an ignored signal stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _installed.clear()


def reset_stop_request() -> None:
    _received.signum, _received.at, _received.count = 0, 0.0, 0


def stop_signal() -> int:
    """The first stop signal this process received (0 for none)."""
    return _received.signum


def seconds_since_signal() -> float:
    return time.monotonic() - _received.at if _received.signum else 0.0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopAgreement:
    """Whether any rank was asked to stop, agreed by all ranks at a step boundary.

    Call :meth:`poll` at every step boundary on every rank (the same number of
    times everywhere). It returns the agreed signal number (0: go on).
    Several ranks: round ``k`` issues an asynchronous all-reduce (MAX) of this
    rank's flag on a dedicated gloo group and returns the result of round
    ``k - 1``, which every rank reads alike: all ranks stop at the same
    boundary, one step after the first signal.
    """

    def __init__(self, world_size: int, timeout: timedelta | None = None) -> None:
        self.world_size = world_size
        self._group: Any = None
        self._work: Any = None
        self._flag: Any = None
        if world_size > 1:
            import torch
            import torch.distributed as dist

            self._group = dist.new_group(backend="gloo", timeout=timeout)
            self._flag = torch.zeros(1, dtype=torch.int32)

    def poll(self) -> int:
        if self._group is None:
            return stop_signal()
        import torch.distributed as dist

        agreed = 0
        if self._work is not None:
            self._work.wait()
            self._work = None
            agreed = int(self._flag.item())
        if agreed:
            return agreed
        self._flag.fill_(stop_signal())
        self._work = dist.all_reduce(
            self._flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return 0

    def close(self) -> None:
        """Wait for the round in flight, so no rank leaves with an unmatched collective."""
        if self._work is not None:
            self._work.wait()
            self._work = None


def set_collective_timeouts(seconds: float) -> None:
    """Give every process group (the world, the mesh's, titan's gloo groups) this timeout.

    A collective that waits longer for the other ranks (one died or hangs)
    raises instead of blocking forever; the rank then exits with an error
    and the launcher ends the job. ``[comm] init_timeout_seconds`` applies
    until the first step is done, ``train_timeout_seconds`` after it.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from torch.distributed import distributed_c10d as c10d

    timeout = timedelta(seconds=seconds)
    for group in list(c10d._world.pg_map):
        with contextlib.suppress(Exception):  # backends without settable timeouts keep theirs
            c10d.set_timeout(timeout, group)


resume_hint: Callable[[int], str] | None = None
"""Set by a launcher whose scheduler brings a stopped run back by itself (the Slurm task, on the
rank that prints the line): given the stop signal, what happens next, instead of "run the same
command again to resume"; "" keeps that text."""


def stopped_message(step: int, signum: int, checkpoint: Any, seconds: float) -> StopRequested:
    """The exception (and its one line) for a run that stopped at ``step`` on ``signum``."""
    name = signal_name(signum)
    if checkpoint is None:
        return StopRequested(
            f"stopped at step {step} on {name}; checkpointing is off "
            "(checkpoint.enable_checkpoint = false), so the next run starts from step 0",
            128 + signum,
        )
    next_step = (
        resume_hint(signum) if resume_hint else ""
    ) or "run the same command again to resume"
    return StopRequested(
        f"stopped at step {step} on {name}: checkpoint {checkpoint} complete {seconds:.1f} s "
        f"after the signal; {next_step} (exit code {EXIT_STOPPED_RESUMABLE})",
        EXIT_STOPPED_RESUMABLE,
    )
