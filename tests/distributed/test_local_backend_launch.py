"""`--backend local`: the torchrun command (dry run), multi-machine options, and Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from fault_helpers import wait_for_steps  # noqa: E402  (one copy: the fault tests')

from titan.backends.local import LocalBackend  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402

TORCHRUN = [sys.executable, "-m", "titan.backends.local.torchrun_agent"]


def _titan(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_dry_run_prints_the_exact_torchrun_command_and_launches_nothing(tmp_path):
    proc = _titan("--nproc", "2", "--dry-run", f"--job.dump_folder={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    config = tmp_path / "job_config.toml"
    assert cmd == [
        *TORCHRUN,
        "--nproc-per-node=2",
        "--nnodes=1",
        "--standalone",
        "-m",
        "titan.core.train",
        str(config),
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written or trained


def test_several_machines_use_a_c10d_rendezvous():
    job = prepare_job(
        None,
        overrides=[
            ("launch.nnodes", "2"),
            ("launch.nproc_per_node", "4"),
            ("launch.rdzv_endpoint", "node0:29500"),
            ("launch.rdzv_id", "run42"),
            ("launch.max_restarts", "3"),
        ],
    )
    cmd = LocalBackend().command(job, nproc=4)
    assert cmd[: len(TORCHRUN) + 6] == [
        *TORCHRUN,
        "--nproc-per-node=4",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node0:29500",
        "--rdzv-id=run42",
        "--max-restarts=3",
    ]


def test_several_machines_without_an_endpoint_is_a_one_line_error(tmp_path):
    proc = _titan("--nnodes", "2", "--dry-run", f"--job.dump_folder={tmp_path}")
    assert proc.returncode == 2
    assert "--launch.rdzv_endpoint=HOST:PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_cpu_process_dry_run_shows_the_per_rank_command(tmp_path):
    proc = _titan("--dry-run", f"--job.dump_folder={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert cmd == [sys.executable, "-m", "titan.core.train", str(tmp_path / "job_config.toml")]


def _processes_mentioning(text: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.add(int(entry.name))
    return found


def test_ctrl_c_stops_every_rank(tmp_path, titan_process):
    """SIGINT to titan's process group (what a terminal's Ctrl-C does) ends torchrun and all ranks."""
    dump = tmp_path / "run"
    proc = titan_process(
        "--nproc=2",
        "--model.flavor=debug",
        "--training.seq_len=32",
        "--training.local_batch_size=1",
        "--training.steps=100000",
        "--metrics.log_freq=1",
        f"--job.dump_folder={dump}",
    )
    wait_for_steps(proc, dump, 2)  # every rank is training
    ranks = _processes_mentioning(str(dump / "job_config.toml"))
    assert len(ranks) == 3, ranks  # torchrun and its two ranks

    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=90) == 130
    # torchrun has exited; its ranks may take a moment longer to be reaped: a condition, bounded.
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(dump / "job_config.toml")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(dump / "job_config.toml"))
    log = proc.log.read_text()
    assert "rank 0: interrupted" in log and "rank 1: interrupted" in log
    assert "interrupted: all ranks stopped" in log


def test_the_rank_with_the_error_is_named_not_the_rank_the_agent_stopped(tmp_path, monkeypatch):
    """torch stamps a rank it terminated with int(time.time()), which can fall before the
    precise time of the error that made it stop that rank (CI saw "rank 1 killed by SIGTERM")."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from titan.backends.local.torchrun_agent import summarize
    from titan.core.rank_errors import write_error_file

    error_file = tmp_path / "rank0.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    write_error_file("checkpoint step-2 is damaged", "user")
    failed = ProcessFailure(0, 100, 2, str(error_file))
    stopped = ProcessFailure(1, 101, -signal.SIGTERM, str(tmp_path / "rank1.json"))  # no file
    stopped.timestamp = int(failed.error_file_data["message"]["extraInfo"]["titan_time"])

    code, line = summarize({1: stopped, 0: failed})
    assert (code, line) == (
        2,
        "rank 0 error: checkpoint step-2 is damaged (1 other rank(s) failed after it); "
        "all ranks were stopped",
    )
    # Both ranks reported the error; the one that reported first was then terminated by the
    # agent before it could exit (seen on a loaded 2-core machine): its report names the
    # cause, and the job exits with the error's code, not as killed.
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "rank1-late.json"))
    write_error_file("checkpoint step-2 is damaged", "user", 2)
    late = ProcessFailure(1, 101, 2, str(tmp_path / "rank1-late.json"))
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    write_error_file("checkpoint step-2 is damaged", "user", 2)  # rank 0's, earlier: the cause
    early = ProcessFailure(0, 100, -signal.SIGTERM, str(error_file))
    early.error_file_data["message"]["extraInfo"]["titan_time"] -= 1.0
    assert summarize({1: late, 0: early}) == (
        2,
        "rank 0 error: checkpoint step-2 is damaged (1 other rank(s) failed after it); "
        "all ranks were stopped",
    )
    # A rank killed by a signal the agent does not send stays a root cause.
    crashed = ProcessFailure(1, 101, -signal.SIGSEGV, str(tmp_path / "rank1.json"))
    crashed.timestamp = stopped.timestamp
    assert summarize({0: failed, 1: crashed})[1].startswith("rank 1 killed by SIGSEGV")
