"""local: run on this machine (or a few, with torchrun's rendezvous); in-process for one process.

One process on one machine trains inside the ``titan`` process itself (no
launcher, fastest start, plain tracebacks). Anything more goes through
torchrun (torch's elastic agent), which starts ``--nproc``
ranks per machine, each running ``python -m titan.core.train
<dump_folder>/job_config.toml``. Several machines meet at a c10d rendezvous:
run the same command on each with ``--nnodes N`` and
``--launch.rdzv_endpoint=HOST:PORT`` (see docs/distributed.md). titan runs
torchrun through ``titan.backends.torchrun`` (same arguments), which prints a
rank's user error once instead of torchrun's ChildFailedError traceback.
Its :meth:`LocalBackend.layout` is this machine (``--nproc`` processes, or
one per GPU, on ``--nnodes`` such machines); ``titan run`` checks the job
against it before anything starts, and :meth:`LocalBackend.launch` adds the
checks of this machine's files (tokenizer, data, checkpoints).

torchrun runs through :mod:`titan.backends.local.torchrun_agent` (torchrun's own
agent with titan's exit codes). Ctrl-C (SIGINT) to ``titan`` is passed to it,
which stops every rank (exit 130). SIGTERM, SIGUSR1 and SIGUSR2 are passed
on to the ranks, which stop at a step boundary after a checkpoint (exit 75,
see docs/reliability.md). torchrun runs in its own session so that it
receives each signal exactly once, and it is told to die with ``titan`` if
``titan`` is killed outright. One process runs in ``titan`` itself, with the
same stop handling.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from titan.core import hookimpl
from titan.core.checks import check_files_here
from titan.core.device_peaks import cpu_name
from titan.core.errors import ConfigError
from titan.core.launch import CONFIG_FILE_NAME, PreparedJob
from titan.core.layout import LAYOUT_ENV, LaunchLayout, cpu_device, cuda_device
from titan.core.registry import BackendRegistry

AUTOLOAD = True

_console = Console(stderr=True, highlight=False, soft_wrap=True)

# Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _no_gpu_driver() -> bool:
    """True when this machine has no NVIDIA or AMD GPU driver: then no GPU, known without torch.

    Importing torch takes seconds on a busy machine; bad input must be reported
    faster than that, and the checks before launch need the number of GPUs.
    """
    return not (
        Path("/proc/driver/nvidia").exists()
        or Path("/dev/kfd").exists()
        or any(Path("/dev").glob("nvidia[0-9]*"))
    )


def gpu_count() -> int:
    if sys.platform.startswith("linux") and _no_gpu_driver():
        return 0
    import torch

    return torch.cuda.device_count()


def default_nproc() -> int:
    """One process per visible GPU, or 1 on a CPU-only machine."""
    return gpu_count() or 1


def rank_env(nproc: int, gpus: int, layout: LaunchLayout | None = None) -> dict[str, str]:
    """Environment for the ranks: on CPU, split the cores between them and stop OpenMP spinning.

    OpenMP threads busy-wait between parallel regions; ranks sharing cores
    then slow each other down (up to 1.5x here). Values already set win. The
    ranks check the job against ``layout``, the one ``titan run`` checked.
    """
    env = dict(os.environ)
    if layout is not None:
        env[LAYOUT_ENV] = layout.to_env()
    if gpus == 0:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("PYTHONUNBUFFERED", "1")  # rank output interleaves line by line, in order
    return env


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if ``titan`` dies (Linux), so no orphaned run goes on."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _dry_run_note(job: PreparedJob, what: str) -> None:
    """Say what would run; the command goes to stdout alone, for scripts."""
    _console.print(
        f"dry run: would train {what}; nothing is written: at launch the command reads "
        f"{job.dump_folder / CONFIG_FILE_NAME} (what `titan config show` prints for the same "
        "arguments)"
    )


@dataclass
class LocalBackend:
    name: str = "local"
    description: str = (
        "this machine: in-process for 1 process, torchrun for more (or several machines)"
    )

    def nproc(self, job: PreparedJob) -> int:
        launch = job.config.launch
        nproc = launch.nproc_per_node or default_nproc()
        gpus = gpu_count()
        if gpus and nproc > gpus:
            raise ConfigError(
                f"--nproc {nproc} but this machine has {gpus} GPU(s); one rank needs one GPU, "
                f"so pass --nproc {gpus} or less (or hide the GPUs with CUDA_VISIBLE_DEVICES= "
                "to run on CPU)"
            )
        return nproc

    def command(self, job: PreparedJob, nproc: int, config_path: Path | None = None) -> list[str]:
        """The torchrun command line every machine runs."""
        launch = job.config.launch
        config_path = config_path or job.dump_folder / CONFIG_FILE_NAME
        if launch.nnodes > 1 and not launch.rdzv_endpoint:
            raise ConfigError(
                f"--nnodes {launch.nnodes} needs a rendezvous address all machines can reach: "
                "pass --launch.rdzv_endpoint=HOST:PORT (the first machine's) on every machine"
            )
        if launch.max_restarts < 0:
            raise ConfigError("launch.max_restarts must be 0 or more")
        cmd = [
            sys.executable,
            "-m",
            "titan.backends.local.torchrun_agent",
            f"--nproc-per-node={nproc}",
            f"--nnodes={launch.nnodes}",
        ]
        if launch.rdzv_endpoint:
            cmd += [
                f"--rdzv-backend={launch.rdzv_backend}",
                f"--rdzv-endpoint={launch.rdzv_endpoint}",
                f"--rdzv-id={launch.rdzv_id}",
            ]
        else:  # one machine: torchrun picks a free port itself, so runs never collide
            cmd.append("--standalone")
        if launch.max_restarts:
            cmd.append(f"--max-restarts={launch.max_restarts}")
        return [*cmd, *job.train_command(config_path)[1:]]

    def layout(self, job: PreparedJob, offline: bool) -> LaunchLayout:
        """This machine: ``--nproc`` processes (default: one per GPU, or 1 on CPU), ``--nnodes`` alike."""
        nproc = self.nproc(job)
        gpus = gpu_count()
        nnodes = max(job.config.launch.nnodes, 1)
        device = cuda_device(0) if gpus else cpu_device(nproc, model=cpu_name())
        machines = "this machine" if nnodes == 1 else f"{nnodes} machines like this one"
        return LaunchLayout(
            nodes=nnodes,
            procs_per_node=nproc,
            device=device,
            where=machines,
            procs_option="--nproc {n}",
            nodes_option="--nnodes {n}" if nnodes > 1 else "",
            max_procs_per_node=gpus or None,
        )

    def check_here(self, job: PreparedJob) -> None:
        """What the layout checks leave: the launch command's settings and this machine's files.

        ``titan run`` has checked the job against :meth:`layout` already;
        these read files, so they run only for a real launch or a dry run
        of this machine's ranks.
        """
        layout = self._layout(job)
        if layout.world_size > 1:
            self.command(job, layout.procs_per_node)  # its checks (rendezvous, restarts) raise
        if layout.nodes == 1:  # the ranks read this machine's files
            check_files_here(job)

    def _layout(self, job: PreparedJob) -> LaunchLayout:
        if job.layout is None:  # launched without `titan run` (a test, a script): check here
            from titan.core.checks import check_job

            check_job(job, self.layout(job, offline=False))
        assert job.layout is not None
        return job.layout

    def launch(self, job: PreparedJob, dry_run: bool, wait: bool = False) -> int:
        """Run in the foreground: ``wait`` is implied."""
        self.check_here(job)
        layout = self._layout(job)
        nproc = layout.procs_per_node
        if layout.world_size == 1:
            return self._in_process(job, dry_run)
        cmd = self.command(job, nproc)
        _warn_if_oversubscribed(nproc)
        if dry_run:
            _dry_run_note(job, f"{layout.world_size} ranks through torchrun")
            print(shlex.join(cmd), flush=True)
            return 0
        cmd = self.command(job, nproc, job.write_config())  # .next.toml while unvalidated
        return run_torchrun(cmd, rank_env(nproc, gpu_count(), layout))

    def _in_process(self, job: PreparedJob, dry_run: bool) -> int:
        if dry_run:
            _dry_run_note(job, "one process, inside titan itself; the same run as a command")
            print(shlex.join(job.train_command(job.dump_folder / CONFIG_FILE_NAME)), flush=True)
            return 0
        job.config_file = job.write_config()
        from titan.core.faults import StopRequested
        from titan.core.train import run_training

        try:
            run_training(job)  # Ctrl-C: KeyboardInterrupt, reported by the CLI (exit 130)
        except StopRequested as stop:  # SIGTERM/SIGUSR1/SIGUSR2: stopped after a checkpoint
            _console.print(stop.message)
            return stop.exit_code
        return 0


def _warn_if_oversubscribed(nproc: int) -> None:
    """More CPU ranks than cores run, but each gets a fraction of a core: say so, once."""
    cores = os.cpu_count() or 1
    if gpu_count() == 0 and nproc > cores:
        _console.print(
            f"warning: --nproc {nproc} starts {nproc} ranks on {cores} CPU core(s); they share "
            f"the cores and run slowly (--nproc {cores} or less runs faster)"
        )


def run_torchrun(cmd: list[str], env: dict[str, str]) -> int:
    """Run torchrun until it exits; pass SIGINT and the stop signals on. Returns its exit code.

    After Ctrl-C the code is 130; after a stop signal it is what the ranks
    made of it (75 when they stopped after a checkpoint).
    """
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,  # the terminal's Ctrl-C reaches titan only; titan passes it on
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    last_forwarded = 0.0
    interrupted = False

    def forward(signum: int, _frame: Any) -> None:
        # One Ctrl-C often arrives twice (from the terminal and again from a wrapper
        # such as `uv run`); a second signal would cut torchrun's orderly shutdown
        # short, so repeats within a second are dropped. A later Ctrl-C is passed on.
        nonlocal last_forwarded, interrupted
        interrupted = interrupted or signum == signal.SIGINT
        now = time.monotonic()
        if proc.poll() is None and now - last_forwarded > 1.0:
            proc.send_signal(signum)
        last_forwarded = last_forwarded if now - last_forwarded <= 1.0 else now

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if interrupted:
        _console.print("interrupted: all ranks stopped")
        return INTERRUPTED
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


@hookimpl
def titan_register_backends(registry: BackendRegistry) -> None:
    registry.add(LocalBackend())
