"""`titan run --backend slurm --dry-run`: the exact sbatch script, without Slurm, network or writes.

These tests need no cluster. The dry run runs in a network namespace of its own
with only a loopback device (``unshare -n``) and a PATH without Slurm's commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prerequisites import require  # noqa: E402
from slurm_helpers import titan  # noqa: E402

ISOLATED = '/usr/sbin/ip link set lo up && exec "$@"'


def isolated_titan(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """``titan ARGS`` with no network but loopback and no Slurm on PATH."""
    env = {
        "PATH": str(Path(sys.executable).parent),  # the venv's bin: no sbatch, srun, scontrol
        "HOME": str(home),
        "TITAN_HOME": str(home / ".titan"),
        "HF_HUB_OFFLINE": "1",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    cmd = [*network_namespace(), "/bin/sh", "-c", ISOLATED, "sh"]
    cmd += [sys.executable, "-m", "titan.core.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def network_namespace() -> list[str]:
    """``unshare`` with a network namespace of its own: as root plainly, otherwise inside a
    user namespace (``-r``), where the kernel allows those; else one line says what is missing."""
    cmd = ["/usr/bin/unshare", "-n"] if os.geteuid() == 0 else ["/usr/bin/unshare", "-rn"]
    probe = subprocess.run([*cmd, "true"], capture_output=True, text=True)
    if probe.returncode:
        require(
            f"network namespaces ({' '.join(cmd)}: {probe.stderr.strip()}): run the tests as "
            "root, or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
        )
    return cmd


@pytest.fixture
def empty_dirs(tmp_path: Path) -> tuple[Path, Path]:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    return cwd, home


def all_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*")]


def test_dry_run_prints_the_sbatch_script_offline_and_writes_nothing(empty_dirs):
    cwd, home = empty_dirs
    # The cluster's shared file system, as this (login) machine sees it; not created by a dry run.
    shared = cwd.parent / "shared" / "runs" / "8b"
    proc = isolated_titan(
        cwd,
        home,
        "run",
        "--backend=slurm",
        "--dry-run",
        "--slurm.nodes=4",
        "--nproc=8",
        "--slurm.partition=h100",
        "--slurm.account=llm",
        "--slurm.time=48:00:00",
        "--slurm.cpus_per_task=12",
        "--slurm.signal_delay=300",
        "--slurm.setup=module load cuda/12.4,source /shared/venv/bin/activate",
        "--slurm.env=NCCL_DEBUG=WARN",
        "--slurm.sbatch=reservation=big",
        f"--job.dump_folder={shared}",
    )
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for flag in (
        "--nodes=4",
        "--ntasks-per-node=8",  # one task per rank
        "--gpus-per-node=8",
        "--cpus-per-task=12",
        "--partition=h100",
        "--account=llm",
        "--time=2880",  # 48 hours, in minutes
        "--signal=USR2@300",
        "--requeue",
        "--reservation=big",
        f"--output={shared}/slurm/%j_0_log.out",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    setup = lines.index("# setup")
    assert lines[setup + 1 : setup + 4] == [
        "module load cuda/12.4",
        "source /shared/venv/bin/activate",
        "export NCCL_DEBUG=WARN",
    ]
    command = lines[-1]
    assert command.startswith(f"srun --unbuffered --output {shared}/slurm/%j_%t_log.out")
    assert "--kill-on-bad-exit=1" in command
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {shared}/slurm")
    assert "checkpointing: turned on by the Slurm backend" in proc.stderr
    assert "would submit 4 node(s) x 8 rank(s)" in proc.stderr
    assert all_files(cwd, home) == []
    assert not shared.parent.parent.exists()


def test_dry_run_on_cpu_nodes_asks_for_no_gpus(empty_dirs):
    cwd, home = empty_dirs
    proc = isolated_titan(
        cwd, home, "run", "--backend=slurm", "--dry-run", "--slurm.gpus_per_node=0", "--nnodes=2"
    )
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --nodes=2" in proc.stdout
    assert "#SBATCH --ntasks-per-node=1" in proc.stdout
    assert "gpus" not in proc.stdout and "--time" not in proc.stdout
    assert all_files(cwd, home) == []


def test_dry_run_asks_sbatch_for_the_gpu_type_and_checks_against_it(empty_dirs):
    cwd, home = empty_dirs
    args = ("run", "--backend=slurm", "--dry-run", "--slurm.gpus_per_node=4")
    proc = isolated_titan(cwd, home, *args, "--slurm.gpu_type=h100")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --gpus-per-node=h100:4" in proc.stdout.splitlines()
    assert "note:" not in proc.stderr  # an H100: memory and float8 known
    untyped = isolated_titan(cwd, home, *args)
    assert "#SBATCH --gpus-per-node=4" in untyped.stdout.splitlines()
    notes = [line for line in untyped.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--slurm.gpu_type" in notes[0], untyped.stderr
    fp8 = isolated_titan(cwd, home, *args, "--slurm.gpu_type=a100", "--plugins=fp8")
    assert fp8.returncode == 2 and "A100" in fp8.stderr and fp8.stdout == ""
    assert all_files(cwd, home) == []


def test_submitting_without_slurm_says_where_to_run(empty_dirs):
    cwd, home = empty_dirs
    proc = isolated_titan(cwd, home, "run", "--backend=slurm", "--slurm.gpus_per_node=0")
    assert proc.returncode == 2
    assert "sbatch is not on PATH" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_files(cwd, home) == []  # found before anything is written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slurm.time=2", "--slurm.signal_delay=120"], "slurm.time 2 (120 s) leaves no time"),
        (["--slurm.time=soon"], "slurm.time 'soon' is not a Slurm time"),
        (["--slurm.env=NCCL_DEBUG"], "slurm.env entry 'NCCL_DEBUG' is not NAME=VALUE"),
        (["--nproc=9"], "--nproc 9 but slurm.gpus_per_node is 8"),
        (["--slurm.nodes=2", "--nnodes=3"], "--nnodes 3 and slurm.nodes 2 disagree"),
        (["--slurm.sbatch=mail type=END"], "slurm.sbatch entry 'mail type=END'"),
    ],
)
def test_bad_slurm_settings_are_one_line_before_anything_runs(tmp_path, args, message):
    proc = titan("run", "--backend=slurm", "--dry-run", f"--job.dump_folder={tmp_path}/r", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
