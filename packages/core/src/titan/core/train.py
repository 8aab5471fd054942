"""Per-rank entry point: ``python -m titan.core.train JOB_CONFIG.toml``.

Backends (torchrun, Slurm, SageMaker) start this on every rank with the
effective config the CLI wrote; the local backend calls :func:`run_training`
in-process for single-process runs.

Exit codes: 0 finished; 75 (:data:`~titan.core.errors.EXIT_STOPPED_RESUMABLE`)
stopped on SIGTERM/SIGUSR1/SIGUSR2 after a complete checkpoint; 2 a user
error (config, files); 1 anything else; 130 Ctrl-C. A failing rank prints its
error once, as ``rank R: error: ...``, and records it for the launcher (see
:mod:`titan.core.rank_errors`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from titan.core.errors import TitanError
from titan.core.launch import PreparedJob, discard_unpromoted_config, prepare_job


def run_training(job: PreparedJob) -> dict[str, Any]:
    """Build the trainer for ``job`` and train, then leave the process group.

    Only a run that finished or stopped on request leaves it (all ranks meet
    at a barrier first); after an error or Ctrl-C the other ranks may be gone,
    so the group is left to the process exit rather than to a barrier that
    could hang. Raises :class:`~titan.core.faults.StopRequested` after a stop
    checkpoint.
    """
    from titan.core.quiet import quiet_library_noise

    quiet_library_noise()
    from titan.core import faults
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    faults.install_stop_handlers()
    try:
        # The trainer makes the new config the folder's job_config.toml once the model is
        # built and any checkpoint loaded (launch.promote_config).
        result = Trainer(job).train()
    except faults.StopRequested:
        # Every rank agreed to stop here: they all reach the barrier. Later signals are
        # ignored: a repeated one while the process exits must not turn exit 75 into a kill.
        shutdown_parallel()
        faults.ignore_further_stop_signals()
        raise
    except BaseException:
        faults.uninstall_stop_handlers()
        discard_unpromoted_config(job)
        raise
    faults.uninstall_stop_handlers()
    shutdown_parallel()
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m titan.core.train JOB_CONFIG.toml", file=sys.stderr)
        return 2
    from titan.core.quiet import quiet_library_noise

    quiet_library_noise()  # before the plugins' validation imports torch and torchao
    from titan.core.faults import StopRequested
    from titan.core.rank_errors import report_error

    rank = int(os.environ.get("RANK", "0"))
    try:
        job = prepare_job(Path(argv[0]))
        if rank == 0:
            for note in job.config.notes:
                print(f"note: {note}", file=sys.stderr, flush=True)
        run_training(job)
    except StopRequested as exc:
        if rank == 0:
            print(exc.message, file=sys.stderr, flush=True)
        return exc.exit_code
    except TitanError as exc:
        return report_error(exc, exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C, passed on by torchrun: stop quietly, no traceback
        print(f"rank {rank}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report_error(exc, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
