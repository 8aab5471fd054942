"""local: run on this machine, in-process for one process, through torchrun for more."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

from rich.console import Console
from titan.core import hookimpl
from titan.core.launch import Job
from titan.core.registry import BackendRegistry

AUTOLOAD = True

_console = Console(stderr=True, highlight=False)


def default_nproc() -> int:
    """One process per visible GPU, or 1 on a CPU-only machine."""
    import torch

    return torch.cuda.device_count() or 1


@dataclass
class LocalBackend:
    name: str = "local"
    description: str = "this machine: in-process for 1 process, torchrun for more"

    def command(self, job: Job, nproc: int) -> list[str]:
        launch = job.config.launch
        config_path = job.dump_folder / "job_config.toml"
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={nproc}",
            f"--nnodes={launch.nnodes}",
            "--standalone" if launch.nnodes == 1 else "--rdzv-backend=c10d",
            *job.train_command(config_path)[1:],
        ]

    def launch(self, job: Job, dry_run: bool) -> int:
        launch = job.config.launch
        nproc = launch.nproc_per_node or default_nproc()
        if nproc == 1 and launch.nnodes == 1:
            if dry_run:
                _console.print(
                    f"dry run: would train in this process; config:\n{job.effective_toml()}"
                )
                return 0
            job.write_config()
            from titan.core.train import run_training

            run_training(job)
            return 0
        cmd = self.command(job, nproc)
        if dry_run:
            print(shlex.join(cmd))
            return 0
        job.write_config()
        env = dict(os.environ)
        if default_nproc() == 1:  # CPU ranks: one thread each, no spinning (see docs)
            env.setdefault("OMP_NUM_THREADS", "1")
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return subprocess.call(cmd, env=env)


@hookimpl
def titan_register_backends(registry: BackendRegistry) -> None:
    registry.add(LocalBackend())
