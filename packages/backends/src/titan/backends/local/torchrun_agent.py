"""torchrun, with titan's exit codes: ``python -m titan.backends.local.torchrun_agent TORCHRUN-ARGS``.

The local backend starts this instead of ``python -m torch.distributed.run``
(same arguments, same elastic agent, run in this process) for two reasons:

- **Stop requests.** torchrun answers SIGTERM by terminating every rank
  after a 30 s grace period and exits 1; SIGUSR1/SIGUSR2 would kill it
  outright. Here SIGTERM, SIGUSR1 and SIGUSR2 are passed on to the ranks
  instead, which agree on a step boundary, write a checkpoint and exit 75
  (:data:`titan.core.errors.EXIT_STOPPED_RESUMABLE`); the agent sees them
  exit and this process exits 75 too.
- **One line per failed job.** torchrun treats any non-zero exit as a
  failure and prints a ``ChildFailedError`` traceback and table. Here the
  failures are read from the ranks' error files (see
  :mod:`titan.core.rank_errors`) and summed up in one line naming the rank
  whose failure came first and was not only a broken collective.

Ctrl-C (SIGINT) keeps torchrun's own handling: every rank is stopped, exit 130.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from titan.core.errors import EXIT_STOPPED_RESUMABLE
from titan.core.faults import STOP_SIGNALS, signal_name
from titan.core.rank_errors import LAUNCHER_REPORTS


def _children() -> list[int]:
    """Pids of this process's children: the ranks the agent started (Linux /proc)."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return pids


def _forward(signum: int, _frame: Any) -> None:
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _quiet_elastic_logs() -> None:
    """torchrun's per-failure log lines: the summary line below replaces them."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.run").setLevel(logging.ERROR)


def _report(failure: Any) -> dict[str, Any]:
    """The ``message`` record of the rank's error file (empty without one).

    torch keeps that whole record as ``failure.message`` when it is a dict, as
    titan's is (:func:`titan.core.rank_errors.write_error_file`), so the text
    is read from it here.
    """
    data = failure.error_file_data or {}
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, dict) else {}


def _kind_and_time(failure: Any) -> tuple[str, float]:
    info = _report(failure).get("extraInfo", {})
    if "titan_kind" in info:
        return info["titan_kind"], float(info.get("titan_time", failure.timestamp))
    return ("signal" if failure.exitcode < 0 else "exit"), float(failure.timestamp)


def _root_cause_order(failure: Any) -> tuple[bool, bool, float]:
    """Sort key: real failures first, then the earliest.

    Two kinds of failure follow another rank's: a broken collective (its peer
    died) and a rank the agent terminated itself (SIGTERM, then SIGKILL, with no
    report of its own) once it saw the first failure. The latter's time cannot
    order it: torch records it as ``int(time.time())`` when it was reaped, which
    may fall before the precise time of the report that made the agent stop it.
    """
    kind, when = _kind_and_time(failure)
    stopped_by_agent = kind == "signal" and -failure.exitcode in (signal.SIGTERM, signal.SIGKILL)
    return kind == "collective", stopped_by_agent, when


def summarize(failures: dict[int, Any]) -> tuple[int, str]:
    """(exit code, one line) for the ranks that failed.

    Any rank exiting 75 means every rank passed the stop checkpoint's final
    barrier (the checkpoint is complete), so the job stopped resumably, even
    if the agent then terminated the slower ranks. Otherwise the root cause
    is the earliest failure that followed no other (see :func:`_root_cause_order`),
    or the earliest failure at all.
    """
    if any(f.exitcode == EXIT_STOPPED_RESUMABLE for f in failures.values()):
        return EXIT_STOPPED_RESUMABLE, ""
    ranked = sorted(failures.items(), key=lambda item: _root_cause_order(item[1]))
    rank, root = ranked[0]
    report = _report(root)
    kind = _kind_and_time(root)[0]
    if kind not in ("signal", "exit"):  # it said why, even if the agent then stopped it
        what = f"error: {report.get('message', root.message)}"
        code = int(report.get("extraInfo", {}).get("titan_exit_code", root.exitcode))
        code = code if code > 0 else 1
    elif root.exitcode < 0:
        what = f"killed by {signal_name(-root.exitcode)}"
        code = 1
    else:
        what = f"exited with code {root.exitcode} and no error message (see its output above)"
        code = root.exitcode
    others = len(failures) - 1
    tail = f" ({others} other rank(s) failed after it)" if others else ""
    return code, f"rank {rank} {what}{tail}; all ranks were stopped"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # SIGTERM is titan's (passed to the ranks); torchrun's agent handles only these.
    argv = ["--signals-to-handle=SIGINT,SIGHUP,SIGQUIT", *argv]
    os.environ[LAUNCHER_REPORTS] = "1"
    for sig in STOP_SIGNALS:
        signal.signal(sig, _forward)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    _quiet_elastic_logs()
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        code, line = summarize(exc.failures)
        if line:
            print(line, file=sys.stderr, flush=True)
        return code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
