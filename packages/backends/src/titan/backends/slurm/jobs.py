"""A submitted job seen from the login node: its state, its logs, and cancelling it.

State comes from ``scontrol show job`` while the controller remembers the job
(``MinJobAge``), then from accounting (``sacct``). Logs are submitit's
per-task files (one per rank, stdout and stderr together). What ``titan logs``
prints is rank 0's log with each Python traceback folded into its last line
(the full text stays in the file), and, for a failed job, which rank failed
first and its error line.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from titan.backends.slurm.task import FAILURE_MARK, scontrol_fields
from titan.core.errors import ConfigError
from titan.core.jobs import FINAL_STATES, JobRecord

_STATES = {
    "PENDING": "PENDING",
    "CONFIGURING": "PENDING",
    "SUSPENDED": "PENDING",
    "RUNNING": "RUNNING",
    "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "COMPLETING": "STOPPING",
    "COMPLETED": "COMPLETED",
    "CANCELLED": "CANCELLED",
    "TIMEOUT": "TIMEOUT",
    "REQUEUED": "REQUEUED",
    "REQUEUE_FED": "REQUEUED",
    "REQUEUE_HOLD": "REQUEUED",
    "PREEMPTED": "REQUEUED",
    "FAILED": "FAILED",
    "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "DEADLINE": "FAILED",
}


@dataclass
class SlurmState:
    state: str
    """One of titan.core.jobs.STATES."""
    slurm_state: str
    """Slurm's own word (COMPLETED, CANCELLED by 0, ...)."""
    exit_code: int
    """The batch script's exit code (0 if it has none yet)."""
    signal: int = 0

    @property
    def exit_status(self) -> int:
        """What ``--wait`` and ``titan logs -f`` exit with."""
        if self.state == "COMPLETED":
            return 0
        return self.exit_code or (128 + self.signal if self.signal else 1)


def slurm_env(record: JobRecord) -> dict[str, str]:
    """The environment for Slurm commands: the cluster the job was submitted to."""
    env = dict(os.environ)
    conf = record.extra.get("slurm_conf")
    if conf and not env.get("SLURM_CONF"):
        env["SLURM_CONF"] = conf
    return env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    except FileNotFoundError:
        raise ConfigError(
            f"'{cmd[0]}' is not on PATH: Slurm's commands are needed to reach the job; run "
            "this on the cluster's login node"
        ) from None


def _exit_pair(value: str) -> tuple[int, int]:
    code, _, sig = value.partition(":")
    return int(code or 0), int(sig or 0)


def query_state(record: JobRecord) -> SlurmState:
    env = slurm_env(record)
    proc = _run(["scontrol", "show", "job", record.id, "-o"], env)
    if proc.returncode == 0 and proc.stdout.strip():
        fields = scontrol_fields(proc.stdout)
        raw = fields.get("JobState", "UNKNOWN")
        code, sig = _exit_pair(fields.get("ExitCode", "0:0"))
        return SlurmState(_STATES.get(raw, "UNKNOWN"), raw, code, sig)
    acct = _run(["sacct", "-j", record.id, "-X", "-n", "-P", "-o", "State,ExitCode"], env)
    line = acct.stdout.strip().splitlines()[-1:] if acct.returncode == 0 else []
    if not line:
        return SlurmState("UNKNOWN", "UNKNOWN", 0)
    raw, _, exit_code = line[0].partition("|")
    code, sig = _exit_pair(exit_code)
    return SlurmState(_STATES.get(raw.split()[0], "UNKNOWN"), raw, code, sig)


def cancel(record: JobRecord) -> None:
    proc = _run(["scancel", record.id], slurm_env(record))
    if proc.returncode:
        raise ConfigError(f"scancel {record.id} failed: {proc.stderr.strip()}")


# --- logs ---------------------------------------------------------------------------------


class TracebackFolder:
    """Folds each Python traceback of a log into its final ``Type: message`` line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.held: list[str] = []

    def feed(self, line: str) -> Iterator[str]:
        if self.held:
            if line.startswith((" ", "\t")) or not line.strip():
                self.held.append(line)
                return
            if line.startswith(("During handling", "The above exception")):
                self.held.append(line)
                return
            n = len(self.held)
            self.held = []
            yield f"{line.rstrip()}   [traceback of {n} lines folded; full text: {self.source}]\n"
            return
        if line.startswith("Traceback (most recent call last)"):
            self.held = [line]
            return
        yield line

    def flush(self) -> Iterator[str]:
        yield from self.held
        self.held = []


_ERROR_LINE = re.compile(r"^(rank \d+: )?error: ")
_CONSEQUENCE = "a collective with the other ranks failed"  # another rank's failure, seen from here


def failure_summary(logs: list[Path]) -> list[str]:
    """Lines naming the rank that failed first and its error line, from every rank's log.

    A rank that failed only because another one died (its collective broke)
    is named only when no rank has an error of its own.
    """
    found: list[tuple[bool, str, int, str, Path]] = []
    for rank, path in enumerate(logs):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        last_error = ""
        for line in lines:
            if _ERROR_LINE.match(line):
                last_error = line
            if line.startswith(FAILURE_MARK):
                stamp = re.search(r" failed at (\S+):", line)
                text = line.removeprefix("titan: ")
                if "its error is above" in line and last_error:
                    text += f"\n  {last_error}"
                consequence = _CONSEQUENCE in text
                found.append((consequence, stamp.group(1) if stamp else "", rank, text, path))
    if not found:
        return ["no rank reported an error (killed from outside?); each rank's log is in:"] + [
            f"  {p}" for p in logs
        ]
    _, _, _, text, path = min(found)
    return [f"first failure: {text}", f"its full log: {path}"]


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1  # only whole lines; the rest is read next time
    text = data[:end].decode(errors="replace")
    return text.splitlines(keepends=True), offset + end


def show_logs(record: JobRecord, follow: bool, out: TextIO, poll_s: float = 1.0) -> int:
    """Rank 0's log (tracebacks folded); with ``follow``, until the job ends. See module doc."""
    logs = [Path(p) for p in record.logs]
    main_log = logs[0]
    folder = TracebackFolder(str(main_log))
    offset = 0
    said = ""
    while True:
        state = query_state(record)
        lines, offset = _new_lines(main_log, offset)
        for line in lines:
            out.writelines(folder.feed(line))
        if follow and state.state != said and state.state not in ("RUNNING", "COMPLETED"):
            out.write(f"titan: job {record.id} is {state.state}\n")
            said = state.state
        elif follow:
            said = state.state
        out.flush()
        if not follow or state.state in FINAL_STATES:
            break
        time.sleep(poll_s)
    lines, offset = _new_lines(main_log, offset)
    for line in lines:
        out.writelines(folder.feed(line))
    out.writelines(folder.flush())
    if state.state not in FINAL_STATES:
        out.write(
            f"titan: job {record.id} is {state.state}; `titan logs {record.id} -f` follows it\n"
        )
        return 0
    out.write(
        f"titan: job {record.id} {state.state} ({state.slurm_state}, exit code {state.exit_code})\n"
    )
    if state.state != "COMPLETED":
        for line in failure_summary(logs):
            out.write(f"titan: {line}\n")
    out.flush()
    return state.exit_status
