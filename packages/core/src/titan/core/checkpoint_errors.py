"""What a checkpoint that cannot be loaded or saved says: one line, the cause and the fix.

DCP wraps each rank's exception (and traceback) into one ``CheckpointException``, and
torch's own messages run on for several sentences; these heuristics dig out the first
rank's error, tell a damaged file from a checkpoint that does not fit the job, and find
the OS error (disk full) under a failed save.
"""

from __future__ import annotations

from pathlib import Path

from torch.distributed.checkpoint.api import CheckpointException

from titan.core.errors import TitanError


class CheckpointError(TitanError):
    """A checkpoint cannot be read or does not fit this job."""


class CheckpointSaveError(TitanError):
    """A checkpoint could not be written (disk full, folder removed, no permission)."""

    exit_code = 1


def root_error(exc: BaseException) -> BaseException:
    """The first rank's own exception inside DCP's ``CheckpointException`` wrapper."""
    if isinstance(exc, CheckpointException) and exc.failures:
        inner = next(iter(exc.failures.values()))
        return inner[0] if isinstance(inner, tuple) else inner
    return exc


_DAMAGE_MARKERS = (
    "truncated",
    "central directory",
    "corrupt",
    "ran out of input",
    "unexpected end",
)


def is_damage(exc: BaseException) -> bool:
    """A file of the checkpoint is cut short or corrupt (as opposed to not fitting the job)."""
    root = root_error(exc)
    text = str(root).lower()
    return isinstance(root, EOFError) or any(m in text for m in _DAMAGE_MARKERS)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The gist of a load error, whole words only: DCP wraps each rank's traceback into one
    long message, and torch's messages run on for several sentences."""
    exc = root_error(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "unsupported global" in line.lower():  # weights_only refused a class: name it
            return f"it stores a {line.split('GLOBAL', 1)[-1].split()[0]} object ({line[:200]})"
    if not lines:
        return type(exc).__name__
    gist = lines[0].split(". ")[0].rstrip(".")
    if len(gist) > limit:
        gist = gist[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {gist}" if isinstance(exc, EOFError) else gist


def save_cause(exc: BaseException) -> str:
    """The OS error under DCP's per-rank wrapping (``No space left on device``...)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if e in seen:
            continue
        seen.append(e)
        if isinstance(e, OSError):
            return f"{e.strerror or e} ({type(e).__name__})" + (
                f" writing {e.filename}" if e.filename else ""
            )
        if isinstance(e, CheckpointException):
            for failure in e.failures.values():
                inner = failure[0] if isinstance(failure, tuple) else failure
                if isinstance(inner, BaseException):
                    todo.append(inner)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    cause = first_line(exc)
    if "unexpected pos" in cause:  # torch.save's zip writer hides the OS error (ENOSPC, EFBIG)
        cause += " (a write was cut short: is the disk full?)"
    return cause


def load_error(path: Path, step: int, steps: list[int], exc: BaseException) -> CheckpointError:
    """One line: which checkpoint, what is wrong with it, and which one to load instead."""
    older = [s for s in steps if s < step]
    if older:
        fix = (
            f"load the previous one with --checkpoint.load_step={older[-1]} (complete: "
            f"{', '.join(map(str, steps))})"
        )
    elif len(steps) > 1:
        other = max(s for s in steps if s != step)
        fix = f"load another one with --checkpoint.load_step={other}"
    else:
        fix = f"it is the only one: move '{path}' away to start without it"
    if is_damage(exc):
        return CheckpointError(
            f"checkpoint '{path}' is damaged (a file in it is cut short or corrupt: "
            f"{first_line(exc)}); {fix}"
        )
    return CheckpointError(
        f"cannot load checkpoint '{path}': {first_line(exc)}; it does not fit this job "
        "(another model or plugins?) or holds objects that are not plain data; point "
        f"checkpoint.folder elsewhere, or {fix}"
    )
