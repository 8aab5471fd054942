"""A failing rank reports its error once, with its rank, and records it for the launcher.

Each rank runs in its own process; without care a config error found on
every rank is printed N times, and a rank that dies leaves the others with
an error about a broken collective that hides the real cause. Here:

- the rank's error becomes one line (bugs keep their traceback above it);
- the line is written to torchrun's per-rank error file
  (``TORCHELASTIC_ERROR_FILE``) with a finer timestamp and a ``kind``, so the
  launcher (``titan.backends.local.torchrun_agent``) can name the rank whose failure
  came first and was not merely a consequence ("collective" errors are);
- the rank prints ``rank R: error: ...`` itself unless ``TITAN_ERRORS_TO_LAUNCHER=1``
  says the launcher prints the one line for the job (set by titan's torchrun wrapper;
  Slurm, SageMaker and plain torchrun runs print per rank).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from titan.core.errors import TitanError

LAUNCHER_REPORTS = "TITAN_ERRORS_TO_LAUNCHER"

COLLECTIVE_HINT = (
    "a collective with the other ranks failed or timed out (another rank died or hung; "
    "the timeout is comm.timeout_seconds)"
)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message): kind is ``user``, ``collective`` or ``bug``."""
    if isinstance(exc, TitanError):
        return "user", str(exc)
    try:
        import torch.distributed as dist

        dist_errors: tuple[type, ...] = (dist.DistError,)
    except (ImportError, AttributeError):
        dist_errors = ()
    text = str(exc)
    if isinstance(exc, dist_errors) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Timed out")
    ):
        return "collective", f"{COLLECTIVE_HINT}: {_first_line(exc)}"
    return "bug", f"{type(exc).__name__}: {_first_line(exc)}"


def write_error_file(message: str, kind: str, exit_code: int | None = None) -> None:
    """The record torchrun's ``ProcessFailure`` reads (and titan's wrapper reads in full).

    ``exit_code`` is the one the rank is about to exit with: on a loaded machine the agent
    may terminate the rank (SIGTERM) between this record and its exit, having seen another
    rank fail, and the job must still exit with the code of the error (without it, the
    launcher takes the rank's own exit code).
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    now = time.time()
    info: dict[str, object] = {"timestamp": str(int(now)), "titan_time": now, "titan_kind": kind}
    if exit_code is not None:
        info["titan_exit_code"] = exit_code
    data = {"message": {"message": message, "extraInfo": info}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def report_error(exc: BaseException, exit_code: int) -> int:
    """Print (once) and record this rank's error; returns ``exit_code``."""
    from titan.core.secrets import redact

    kind, message = classify(exc)
    message = redact(message)
    rank = os.environ.get("RANK", "0")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if kind == "bug":
        traceback.print_exception(exc, file=sys.stderr)
    write_error_file(message, kind, exit_code)
    if os.environ.get(LAUNCHER_REPORTS) != "1":
        prefix = f"rank {rank}: " if world > 1 else ""
        print(f"{prefix}error: {message}", file=sys.stderr, flush=True)
    return exit_code
