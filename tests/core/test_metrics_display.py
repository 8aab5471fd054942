"""What a user sees: TensorBoard scalars, plain log lines when piped, a live display in a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ARGS = [
    "--training.steps=6",
    "--training.seq_len=64",
    "--training.local_batch_size=2",
    "--metrics.log_freq=2",
]
CMD = [sys.executable, "-m", "titan.core.cli", "run", *ARGS]
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    dump = tmp_path_factory.mktemp("piped")
    proc = subprocess.run(
        [*CMD, f"--job.dump_folder={dump}", "--metrics.enable_tensorboard=true"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    assert proc.returncode == 0, proc.stderr
    return dump, proc.stderr


def test_tensorboard_has_loss_throughput_mfu_and_memory(piped_run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dump, _ = piped_run
    events = EventAccumulator(str(dump / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("loss", "tokens_per_second", "mfu", "tflops", "memory_rss_gib", "data_time"):
        assert tag in tags, sorted(tags)
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 4, 6], tag
        assert all(s.value >= 0 for s in scalars), tag
    assert all(s.value > 0 for s in events.Scalars("mfu"))
    losses = [s.value for s in events.Scalars("loss")]
    assert losses[-1] < losses[0]


def test_piped_output_is_one_plain_line_per_log_step(piped_run: tuple[Path, str]) -> None:
    _, stderr = piped_run
    assert not ESCAPE.search(stderr)  # no cursor movement or colours in log files
    lines = [line for line in stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/6", "2/6", "4/6", "6/6"]
    for line in lines:
        for field in ("loss", "tok/s", "MFU", "mem", "elapsed", "ETA"):
            assert field in line, line


def _run_in_pty(cmd: list[str], timeout: float = 600) -> tuple[int, bytes]:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal; return its exit code and bytes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TITAN_PLAIN", "CI")}
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="40")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, bytes(out)


def test_live_display_updates_in_place_in_a_terminal(tmp_path: Path) -> None:
    code, raw = _run_in_pty([*CMD, f"--job.dump_folder={tmp_path / 'live'}"])
    text = raw.decode("utf-8", "replace")
    assert code == 0, text
    # The display is redrawn: rich moves the cursor up and erases the old lines.
    assert "\x1b[1A" in text and "\x1b[2K" in text, text
    plain = ESCAPE.sub("", text)
    positions = [plain.find(f"step {s}/6") for s in (2, 4, 6)]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), plain
    # Each redraw replaces the previous one: a cursor-up comes between successive steps.
    between = text[text.find("step 2/6") : text.rfind("step 6/6")]
    assert "\x1b[1A" in between
    for field in ("loss", "tok/s", "MFU", "mem", "elapsed", "ETA"):
        assert field in plain
    assert "done" in plain  # the final summary line after the display closes
    # No plain per-step log lines in a terminal: the display replaces them.
    assert not re.search(r"^step\s+2/6\s+loss", plain, re.MULTILINE)
