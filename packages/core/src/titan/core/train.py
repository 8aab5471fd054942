"""Per-rank entry point: ``python -m titan.core.train JOB_CONFIG.toml``.

Backends (torchrun, Slurm, SageMaker) start this on every rank with the
effective config the CLI wrote; the local backend calls :func:`run_training`
in-process for single-process runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from titan.core.errors import TitanError
from titan.core.launch import Job, prepare_job

RANK_ERRORS_ENV = "TITAN_RANK_ERRORS"
"""Folder where a rank leaves its user error as ``rank-<RANK>.txt`` for the launcher to print
once (set by ``titan.backends.torchrun``); unset, the rank prints it itself."""


def leave_error_for_launcher(message: str) -> bool:
    """Write ``message`` where the launcher reads it; False when not launched that way."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    (Path(folder) / f"rank-{os.environ.get('RANK', '0')}.txt").write_text(message)
    return True


def run_training(job: Job) -> dict[str, Any]:
    """Build the trainer for ``job`` and train, then leave the process group.

    Only a run that finished leaves it (all ranks meet at a barrier first); after
    an error or Ctrl-C the other ranks may be gone, so the group is left to the
    process exit rather than to a barrier that could hang.
    """
    from titan.core.quiet import quiet_library_noise

    quiet_library_noise()
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    result = Trainer(job).train()
    shutdown_parallel()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m titan.core.train JOB_CONFIG.toml", file=sys.stderr)
        return 2
    from titan.core.quiet import quiet_library_noise

    quiet_library_noise()  # before the plugins' validation imports torch and torchao
    try:
        job = prepare_job(Path(argv[0]))
        run_training(job)
    except TitanError as exc:
        # Under titan's torchrun launcher every rank's copy goes to a file, printed once.
        if not leave_error_for_launcher(str(exc)):
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C, passed on by torchrun: stop quietly, no traceback
        print(f"rank {os.environ.get('RANK', '0')}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
