"""A submitted job seen from the login node: its state, its logs, and cancelling it.

State comes from ``scontrol show job`` while the controller remembers the job
(``MinJobAge``), then from accounting (``sacct``), each asked with a timeout of
a few seconds; what Slurm cannot be asked is UNKNOWN with the reason. Slurm's
words become titan's, with what the job left: a job whose ranks stopped after
a checkpoint with no requeue left (Slurm: FAILED, exit code 75) is RESUMABLE,
and it, a cancelled job, and one that failed or timed out after a checkpoint
name the newest complete checkpoint and the command that continues the job
(the submitted ``titan run``, into the same dump folder).

Logs are submitit's per-task files (one per rank, stdout and stderr together).
What ``titan logs`` prints is rank 0's log with each Python traceback folded
into its last line (the full text stays in the file), and, for a failed job,
which rank failed first and its error line.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from titan.backends.slurm.cluster import (
    SCONTROL_TIMEOUT_S,
    configuration_not_found,
    missing_configuration,
    slurm_config,
)
from titan.backends.slurm.task import FAILURE_MARK, scontrol_fields
from titan.core.errors import EXIT_STOPPED_RESUMABLE, ConfigError
from titan.core.jobs import FINAL_STATES, JobRecord, JobStatus

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
ENDED = FINAL_STATES | {"RESUMABLE"}
"""States after which nothing more happens to the job (RESUMABLE: until it is submitted again)."""
UNKNOWN_FOLLOW_S = 20.0
"""How long ``titan logs -f`` goes on while Slurm cannot be asked about the job."""
CANCEL_MARGIN_S = 10.0
"""``titan cancel`` waits for the job to end up to Slurm's KillWait plus this."""


@dataclass
class SlurmState:
    state: str
    """One of titan.core.jobs.STATES."""
    slurm_state: str
    """Slurm's own word (COMPLETED, CANCELLED by 0, ...)."""
    exit_code: int
    """The batch script's exit code (0 if it has none yet)."""
    signal: int = 0
    reason: str = ""
    """Why the state is UNKNOWN; for a pending job, Slurm's reason."""
    lasting: bool = False
    """UNKNOWN for a reason that waiting does not fix (no Slurm configuration here)."""

    @property
    def exit_status(self) -> int:
        """What ``--wait`` and ``titan logs -f`` exit with."""
        if self.state == "COMPLETED":
            return 0
        return self.exit_code or (128 + self.signal if self.signal else 1)


class SlurmUnanswered(Exception):
    """A Slurm command did not answer in time."""


def slurm_env(record: JobRecord) -> dict[str, str]:
    """The environment for Slurm commands: the cluster the job was submitted to.

    Its ``SLURM_CONF`` when that file is still there, else this shell's.
    """
    env = dict(os.environ)
    conf = record.extra.get("slurm_conf")
    if conf and (os.path.isfile(conf) or not env.get("SLURM_CONF")):
        env["SLURM_CONF"] = conf
    return env


def _run(
    cmd: list[str], env: dict[str, str], timeout: float = SCONTROL_TIMEOUT_S
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise ConfigError(
            f"'{cmd[0]}' is not on PATH: Slurm's commands are needed to reach the job; run "
            "this on the cluster's login node"
        ) from None
    except subprocess.TimeoutExpired as exc:
        said = configuration_not_found(exc.stderr)
        raise SlurmUnanswered(
            said or f"Slurm did not answer `{' '.join(cmd[:3])}` within {timeout:g} s"
        ) from None


def _exit_pair(value: str) -> tuple[int, int]:
    code, _, sig = value.partition(":")
    return int(code or 0), int(sig or 0)


def _titan_state(raw: str, code: int, sig: int) -> str:
    state = _STATES.get(raw.split()[0] if raw else "", "UNKNOWN")
    if state == "FAILED" and raw.startswith("FAILED") and code == EXIT_STOPPED_RESUMABLE:
        return "RESUMABLE"  # rank 0 stopped after a checkpoint with no requeue left
    return state


def _unknown(reason: str, lasting: bool = False) -> SlurmState:
    return SlurmState("UNKNOWN", "UNKNOWN", 0, reason=reason, lasting=lasting)


def _last(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@functools.lru_cache(maxsize=8)
def _cluster_name(slurm_conf: str) -> str:
    """ClusterName of the cluster ``slurm_conf`` names (asked once per process)."""
    env = dict(os.environ)
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    return slurm_config(env).get("ClusterName", "")


def other_cluster(record: JobRecord, env: dict[str, str] | None = None) -> str:
    """Why Slurm here cannot speak for the job ("" when it can): it ran on another cluster."""
    wanted = getattr(record, "cluster", "")
    if not wanted:
        return ""
    env = env or slurm_env(record)
    if missing_configuration(env):
        return ""  # said by the state itself
    here = _cluster_name(env.get("SLURM_CONF", ""))
    if here and here != wanted:
        return (
            f"job {record.id} ran on Slurm cluster '{wanted}', but SLURM_CONF names cluster "
            f"'{here}'; export the SLURM_CONF of '{wanted}'"
        )
    return ""


def query_state(record: JobRecord) -> SlurmState:
    """The job's state now; UNKNOWN always with a reason (``reason``). Every command: seconds."""
    env = slurm_env(record)
    missing = missing_configuration(env)
    if missing:
        return _unknown(missing, lasting=True)
    try:
        proc = _run(["scontrol", "show", "job", record.id, "-o"], env)
        if proc.returncode == 0 and proc.stdout.strip():
            fields = scontrol_fields(proc.stdout)
            raw = fields.get("JobState", "UNKNOWN")
            code, sig = _exit_pair(fields.get("ExitCode", "0:0"))
            reason = fields.get("Reason", "None")
            return SlurmState(
                _titan_state(raw, code, sig), raw, code, sig, "" if reason == "None" else reason
            )
        said = configuration_not_found(proc.stderr)
        if said:
            return _unknown(said, lasting=True)
        acct = _run(["sacct", "-j", record.id, "-X", "-n", "-P", "-o", "State,ExitCode"], env)
    except SlurmUnanswered as exc:
        return _unknown(str(exc))
    line = acct.stdout.strip().splitlines()[-1:] if acct.returncode == 0 else []
    if not line:
        why = _last(acct.stderr) if acct.returncode else "no record of it in accounting (sacct)"
        return _unknown(
            f"Slurm knows no job {record.id}: the controller no longer lists it (scontrol: "
            f"{_last(proc.stderr) or 'nothing'}) and sacct says: {why}"
        )
    raw, _, exit_code = line[0].partition("|")
    code, sig = _exit_pair(exit_code)
    return SlurmState(_titan_state(raw, code, sig), raw, code, sig)


# --- what the job left, and how to go on --------------------------------------------------


def newest_checkpoint(record: JobRecord) -> tuple[int, Path] | None:
    """(step, path) of the newest complete checkpoint in the job's checkpoint folder."""
    from titan.core.folders import complete_checkpoints

    folder = record.extra.get("checkpoint_folder") or str(Path(record.dump_folder) / "checkpoint")
    found = complete_checkpoints(Path(folder))
    return found[-1] if found else None


def _without_dump_folder(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--job.dump_folder":
            skip = True
        elif not arg.startswith("--job.dump_folder="):
            out.append(arg)
    return out


def resume_command(record: JobRecord) -> str:
    """The ``titan run`` that continues the job: the submitted one, into the same dump folder."""
    argv = record.extra.get("argv")
    if argv:
        args = [*_without_dump_folder(list(argv)), f"--job.dump_folder={record.dump_folder}"]
    else:  # submitted from Python, not the command line: the config the ranks read
        config = record.extra.get("config_file") or str(
            Path(record.dump_folder) / "job_config.toml"
        )
        args = [config, "--backend=slurm"]
    command = shlex.join(["titan", "run", *args])
    cwd = record.extra.get("cwd")
    if cwd and cwd != os.getcwd():
        command = f"cd {shlex.quote(cwd)} && {command}"
    return command


def describe(record: JobRecord, state: SlurmState) -> str:
    """The detail of a state: what the job left and how to go on, or why it is unknown."""
    if state.state == "UNKNOWN":
        return state.reason
    if state.state == "PENDING" and state.reason:
        return f"waiting: {state.reason}"
    if state.state not in ("RESUMABLE", "CANCELLED", "TIMEOUT", "FAILED"):
        return ""
    newest = newest_checkpoint(record)
    if state.state == "RESUMABLE":
        at = f" at step {newest[0]}" if newest else ""
        return (
            f"stopped after its checkpoint{at} with no requeue left (slurm.max_requeues); "
            f"continue it with: {resume_command(record)}"
        )
    left = what_it_left(record, newest)
    if state.state == "FAILED":
        return f"{state.slurm_state.split()[0]}, exit code {state.exit_code}; {left}"
    return left


def what_it_left(record: JobRecord, newest: tuple[int, Path] | None) -> str:
    if newest is None:
        return "no complete checkpoint"
    return (
        f"newest complete checkpoint: step {newest[0]} ({newest[1]}); continue it with: "
        f"{resume_command(record)}"
    )


def job_status(record: JobRecord) -> JobStatus:
    """State and detail for ``titan jobs``: Slurm's state in titan's words."""
    other = other_cluster(record)
    if other:
        return JobStatus("UNKNOWN", other)
    state = query_state(record)
    return JobStatus(state.state, describe(record, state))


def cancel(record: JobRecord, out: TextIO | None = None) -> JobStatus:
    """``scancel``, then the state once the ranks have stopped (checkpointed) and the job ended.

    A job that already ended gets no scancel: its end state says what it was.
    The wait is bounded by Slurm's KillWait (after which Slurm kills the ranks).
    """
    out = out or sys.stderr
    env = slurm_env(record)
    other = other_cluster(record, env)
    if other:
        return JobStatus("UNKNOWN", f"not cancelled: {other}")
    before = query_state(record)
    if before.state == "UNKNOWN":
        return JobStatus("UNKNOWN", f"not cancelled: {before.reason}")
    if before.state in ENDED:
        detail = describe(record, before)
        already = "already cancelled before this request; " if before.state == "CANCELLED" else ""
        return JobStatus(
            before.state, f"{already}nothing sent to Slurm" + (f"; {detail}" if detail else "")
        )
    try:
        proc = _run(["scancel", record.id], env)
    except SlurmUnanswered as exc:
        return JobStatus("UNKNOWN", f"scancel {record.id} did not answer: {exc}")
    if proc.returncode:
        raise ConfigError(f"scancel {record.id} failed: {_last(proc.stderr)}")
    kill_wait = _seconds(slurm_config(env).get("KillWait", ""), 30.0)
    limit = kill_wait + CANCEL_MARGIN_S
    if before.state not in ("PENDING", "REQUEUED"):
        print(
            f"titan: scancel sent; waiting for job {record.id}'s ranks to stop after their "
            f"checkpoint (at most {limit:g} s)",
            file=out,
            flush=True,
        )
    deadline = time.monotonic() + limit
    state = query_state(record)
    while state.state not in ENDED and state.state != "UNKNOWN" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = query_state(record)
    if state.state not in ENDED:
        return JobStatus(
            state.state,
            f"scancel sent; the job is still ending ({state.slurm_state}); `titan jobs` shows its "
            "end state",
        )
    return JobStatus(state.state, describe(record, state))


def _seconds(text: str, default: float) -> float:
    match = re.match(r"\s*(\d+)", text)
    return float(match.group(1)) if match else default


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


def failure_summary(logs: list[Path], unexplained: bool = True) -> list[str]:
    """Lines naming the rank that failed first and its error line, from every rank's log.

    A rank that failed only because another one died (its collective broke)
    is named only when no rank has an error of its own. When no rank reported
    a failure: a line saying so (``unexplained``), or nothing.
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
        if not unexplained:
            return []
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
    """Rank 0's log (tracebacks folded); with ``follow``, until the job ends. See module doc.

    While Slurm cannot be asked about the job (UNKNOWN), following goes on for
    :data:`UNKNOWN_FOLLOW_S` at most, then stops with one line saying why.
    """
    logs = [Path(p) for p in record.logs]
    main_log = logs[0]
    folder = TracebackFolder(str(main_log))
    offset = 0
    said = ""
    other = other_cluster(record)
    unknown_since: float | None = None
    while True:
        state = _unknown(other, lasting=True) if other else query_state(record)
        lines, offset = _new_lines(main_log, offset)
        for line in lines:
            out.writelines(folder.feed(line))
        if follow and state.state != said and state.state not in ("RUNNING", "COMPLETED"):
            if state.state not in ENDED and state.state != "UNKNOWN":
                out.write(f"titan: job {record.id} is {state.state}\n")
            said = state.state
        elif follow:
            said = state.state
        out.flush()
        if state.state == "UNKNOWN":
            unknown_since = unknown_since if unknown_since is not None else time.monotonic()
        else:
            unknown_since = None
        if not follow or state.state in ENDED or state.lasting:
            break
        if unknown_since is not None and time.monotonic() - unknown_since >= UNKNOWN_FOLLOW_S:
            break
        time.sleep(poll_s)
    lines, offset = _new_lines(main_log, offset)
    for line in lines:
        out.writelines(folder.feed(line))
    out.writelines(folder.flush())
    if state.state == "UNKNOWN":
        waited = f" for {UNKNOWN_FOLLOW_S:g} s" if follow and not state.lasting else ""
        out.write(
            f"titan: job {record.id} is UNKNOWN: Slurm could not be asked about it{waited} "
            f"({state.reason}); `titan logs {record.id} -f` tries again\n"
        )
        out.flush()
        return 1
    if state.state not in ENDED:
        out.write(
            f"titan: job {record.id} is {state.state}; `titan logs {record.id} -f` follows it\n"
        )
        return 0
    detail = describe(record, state)
    if state.state in ("RESUMABLE", "CANCELLED"):
        code = f", exit code {state.exit_code}" if state.exit_code else ""
        out.write(
            f"titan: job {record.id} {state.state} (Slurm: {state.slurm_state}{code}): {detail}\n"
        )
    else:
        out.write(
            f"titan: job {record.id} {state.state} ({state.slurm_state}, exit code "
            f"{state.exit_code})\n"
        )
    if state.state not in ("COMPLETED", "RESUMABLE"):
        # A cancelled job was stopped from outside by design: only a rank's own error is news.
        for line in failure_summary(logs, unexplained=state.state != "CANCELLED"):
            out.write(f"titan: {line}\n")
    newest = newest_checkpoint(record) if state.state in ("FAILED", "TIMEOUT") else None
    if newest:
        out.write(f"titan: {what_it_left(record, newest)}\n")
    out.flush()
    return state.exit_status
