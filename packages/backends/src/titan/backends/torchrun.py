"""torchrun that reports a failed run in one line, not in its ChildFailedError traceback.

``python -m titan.backends.torchrun ARGS`` runs exactly what ``python -m
torch.distributed.run ARGS`` runs (the same parser and launcher, in this
process); only the report differs. torchrun ends a failed run with a
40-line ``ChildFailedError`` traceback and per-rank log lines, and every
rank prints its own copy of a user error. Here the ranks write a user error
(:class:`~titan.core.errors.TitanError`) to a file in a folder named by
``TITAN_RANK_ERRORS`` (``titan.core.train``) instead of printing it, and this launcher prints each
distinct message once, then exits with the failed rank's exit code (2 for a
user error, so ``titan`` exits 2 as for any other bad input).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from titan.core.train import RANK_ERRORS_ENV


def _quiet_agent_logs() -> None:
    """torchrun's agent logs each failed or stopped rank; the summary below replaces that."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _report(exc: BaseException, errors: Path) -> int:
    """Print the ranks' user errors once each (or which rank failed); return the exit code."""
    rank, failure = exc.get_first_failure()  # type: ignore[attr-defined]
    code = failure.exitcode
    messages: list[str] = []
    for path in sorted(errors.glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1])):
        text = path.read_text().strip()
        if text and text not in messages:
            messages.append(text)
    for text in messages:
        print(f"error: {text}", file=sys.stderr, flush=True)
    if not messages:
        how = f"signal {failure.signal_name()}" if code < 0 else f"exit code {code}"
        print(f"rank {rank} failed ({how}); its output above says why", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    errors = Path(tempfile.mkdtemp(prefix="titan-rank-errors-"))
    os.environ[RANK_ERRORS_ENV] = str(errors)
    _quiet_agent_logs()
    try:
        run(args)
        return 0
    except ChildFailedError as exc:
        return _report(exc, errors)
    except SignalException as exc:  # Ctrl-C or SIGTERM passed on by titan: the ranks stopped
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:
        return 128 + int(signal.SIGINT)
    finally:
        shutil.rmtree(errors, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
