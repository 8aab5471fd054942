"""titan against torchtitan v0.2.2 on a CPU: tokens/s side by side, and peak step memory.

    bash benchmarks/setup_torchtitan.sh MIRROR /tmp/tt        # once: TT_DIR and TT_DEPS
    uv run python benchmarks/vs_torchtitan.py --tt-dir /tmp/tt/torchtitan --tt-deps /tmp/tt/deps
    uv run python benchmarks/vs_torchtitan.py --batch 2 --seq-len 64 --steps 20 --modes eager

Both sides run their own trainer, unchanged: ``titan run`` (the CLI) and torchtitan
v0.2.2's ``torchtitan.train`` through ``torchrun``, made to run on a CPU by
benchmarks/torchtitan_cpu.py (device globals pointed at the CPU, CUDA memory monitor
stubbed; torchtitan's files untouched). They train the same model, torchtitan's
``debugmodel`` (dim 256, 6 blocks, 16 heads and 16 KV heads, vocabulary 2048; titan gets
it as a JSON flavor, since titan's ``debug`` has 8 KV heads), on the same corpus and
tokenizer (titan's bundled tinyshakespeare and its BPE, which setup_torchtitan.sh puts
where torchtitan's debug job reads its ``c4_test`` and tokenizer), with the same batch,
precision (bf16 autocast on one process), optimizer (torchtitan's debug TOML: fused
AdamW, lr 8e-4, weight decay 0.1, clipping at 1.0) and LR schedule (2 warmup steps,
linear decay over the last 80%), no activation checkpointing. ``compile`` mode adds
``--plugins compile`` to titan and ``--compile.enable`` to torchtitan.

The two run side by side, each pinned to its own core and swapped every round, the
approach (and the helpers) of benchmarks/overhead.py: on a shared VM one process's speed
drifts by 10 to 30% over minutes, so taking turns would measure the machine, while side
by side a slow spell slows both at the same moment. Both get one torch thread, passive
OpenMP waiting and titan's glibc malloc thresholds (overhead.py's ``_env``). Tokens/s is
the median over windows of ``--log-every`` steps after the first window (warm-up and
compilation): for titan the wall time between its log steps in metrics.jsonl, for
torchtitan the ``tps`` of its log lines at the same steps (torchtitan times a window from
the end of the previous log line, titan from the previous log step; the difference is one
log line's time). The figure of a mode is the median over rounds of titan/torchtitan.

Peak step memory (eager): each side runs one step, then the next step under torch's
``MemTracker`` with the model and the optimizer registered (as benchmarks/memory.py
does): the peak of live tensor bytes over forward, backward and optimizer step. For
titan a worker builds titan's ``Trainer``; for torchtitan, torchtitan_cpu.py wraps
``Trainer.train_step`` of the real run (``TT_MEMORY_STEP``). It counts tensors, not
allocator caching, so on a CPU the figures are exact.

A benchmark that prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# benchmarks/ is sys.path[0] when this file runs as a script (the workers too).
from overhead import _env, _finish, start_titan, titan_rate

HERE = Path(__file__).resolve().parent
TT_CPU = HERE / "torchtitan_cpu.py"
TT_CONFIG = "torchtitan/models/llama3/train_configs/debug_model.toml"
# torchtitan v0.2.2's llama3 "debugmodel" (TransformerModelArgs defaults filled in).
DEBUG16 = {
    "args": {
        "dim": 256,
        "n_layers": 6,
        "n_heads": 16,
        "n_kv_heads": 16,
        "vocab_size": 2048,
        "multiple_of": 256,
        "rope_theta": 500000.0,
        "max_seq_len": 2048,
    }
}
SETUP_HINT = (
    "torchtitan v0.2.2 not found: create it with "
    "`bash benchmarks/setup_torchtitan.sh MIRROR DIR` (MIRROR: a git clone of "
    "github.com/pytorch/torchtitan with tag v0.2.2), then pass --tt-dir DIR/torchtitan "
    "--tt-deps DIR/deps (or set TT_DIR and TT_DEPS)"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TT_LINE = re.compile(r"step:\s*(\d+)\s+loss:\s*([\d.]+).*?tps:\s*([\d,]+)")


def titan_args(args: argparse.Namespace, flavor: Path, mode: str) -> list[str]:
    """titan's overrides for the shared job (torchtitan's debug TOML, in titan's names)."""
    extra = [
        f"--model.flavor={flavor}",
        f"--training.local_batch_size={args.batch}",
        f"--training.seq_len={args.seq_len}",
        "--training.max_norm=1.0",
        "--training.mixed_precision_param=bfloat16",
        "--optimizer.lr=8e-4",
        "--lr_scheduler.warmup_steps=2",
        "--lr_scheduler.decay_ratio=0.8",
        "--lr_scheduler.decay_type=linear",
    ]
    return extra + (["--plugins=compile"] if mode == "compile" else [])


def start_torchtitan(
    args: argparse.Namespace,
    mode: str,
    cpu: int | None,
    folder: str,
    steps: int,
    memory_step: int | None = None,
) -> subprocess.Popen:
    """torchtitan's own trainer through torchrun, pinned to ``cpu``, in its tree."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
    cmd += [str(TT_CPU), "--job.config_file", TT_CONFIG, "--training.steps", str(steps)]
    cmd += ["--training.local_batch_size", str(args.batch), "--training.seq_len", str(args.seq_len)]
    cmd += ["--activation_checkpoint.mode", "none", "--metrics.log_freq", str(args.log_every)]
    cmd += ["--job.dump_folder", folder]
    if mode == "compile":
        cmd.append("--compile.enable")
    env = {**_env(args), "PYTHONPATH": f"{args.tt_dir}{os.pathsep}{args.tt_deps}"}
    if memory_step is not None:
        env["TT_MEMORY_STEP"] = str(memory_step)
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=args.tt_dir,
        preexec_fn=pin,
    )


def torchtitan_rate(args: argparse.Namespace, proc: subprocess.Popen) -> tuple[float, float]:
    """Median tps of torchtitan's log windows after the first, and its last loss."""
    log = _finish(proc, "torchtitan")
    rows = {}
    for line in log.splitlines():
        m = TT_LINE.search(ANSI.sub("", line))
        if m:
            rows[int(m.group(1))] = (float(m.group(2)), float(m.group(3).replace(",", "")))
    windows = range(2 * args.log_every, args.steps + 1, args.log_every)
    if not all(s in rows for s in windows):
        sys.exit(f"torchtitan logged no tps for steps {list(windows)}:\n{log[-3000:]}")
    return statistics.median(rows[s][1] for s in windows), rows[args.steps][0]


def titan_loss(folder: str) -> float:
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["loss"]


def one_round(
    args: argparse.Namespace, mode: str, flavor: Path, i: int
) -> tuple[float, float, float, float]:
    """titan's and torchtitan's tokens/s (and last losses) in round ``i``, side by side."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    titan_cpu, tt_cpu = cpus if i % 2 == 0 else cpus[::-1]
    with tempfile.TemporaryDirectory() as tfold, tempfile.TemporaryDirectory() as ttfold:
        titan = start_titan(args, titan_args(args, flavor, mode), titan_cpu, tfold)
        tt = start_torchtitan(args, mode, tt_cpu, ttfold, args.steps)
        t_rate = titan_rate(args, titan, tfold)
        tt_rate, tt_loss = torchtitan_rate(args, tt)
        return t_rate, tt_rate, titan_loss(tfold), tt_loss


def titan_memory_worker(step: int, extra: list[str]) -> None:
    """Build titan's Trainer, run ``step - 1`` steps, print the peak of step ``step``."""
    from memory import step_tracker

    from titan.core.launch import prepare_job
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    overrides = [tuple(e.removeprefix("--").split("=", 1)) for e in extra]
    with tempfile.TemporaryDirectory() as dump:
        job = prepare_job(None, plugins=[], overrides=[*overrides, ("job.dump_folder", dump)])
        trainer = Trainer(job)
        data = iter(trainer.dataloader)
        for _ in range(step - 1):
            trainer.train_step([next(data)])  # the optimizer state exists from here on
        tracker = step_tracker(trainer)
        batch = next(data)
        with tracker:
            trainer.train_step([batch])
        peak = tracker.get_tracker_snapshot("peak")
        total = sum(v for d in peak.values() for k, v in d.items() if str(k) == "Total")
        print(f"MEMORY_PEAK {total}", flush=True)
        shutdown_parallel()


def peak_of(out: str, what: str) -> float:
    for line in out.splitlines():
        if line.startswith("MEMORY_PEAK "):
            return int(line.split()[1]) / 2**20
    sys.exit(f"{what} printed no MEMORY_PEAK:\n{out[-3000:]}")


def memory(args: argparse.Namespace, flavor: Path) -> tuple[float, float]:
    """Peak MiB of step ``--memory-step`` for titan and torchtitan (eager), side by side."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    step = args.memory_step
    extra = titan_args(args, flavor, "eager") + [f"--training.steps={step}"]
    cmd = [sys.executable, __file__, "--titan-memory", str(step), "--", *extra]
    titan = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(args),
        preexec_fn=lambda: os.sched_setaffinity(0, {cpus[0]}),
    )
    with tempfile.TemporaryDirectory() as folder:
        tt = start_torchtitan(args, "eager", cpus[-1], folder, step, memory_step=step)
        titan_out = _finish(titan, "titan memory worker")
        tt_out = _finish(tt, "torchtitan memory run")
    return peak_of(titan_out, "titan"), peak_of(tt_out, "torchtitan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tt-dir", default=os.environ.get("TT_DIR"), help="env TT_DIR")
    parser.add_argument("--tt-deps", default=os.environ.get("TT_DEPS"), help="env TT_DEPS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="a multiple of --log-every")
    parser.add_argument("--log-every", type=int, default=5, help="also the warm-up steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--modes", nargs="*", default=["eager", "compile"], choices=("eager", "compile")
    )
    parser.add_argument("--memory-step", type=int, default=2, help="0: no memory figures")
    parser.add_argument("--titan-memory", type=int, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    if args.titan_memory:
        titan_memory_worker(args.titan_memory, extra)
        return
    if extra:
        parser.error(f"unknown arguments: {' '.join(extra)}")
    if args.steps % args.log_every or args.steps < 2 * args.log_every:
        parser.error("--steps must be a multiple of --log-every, at least twice it")
    if len(os.sched_getaffinity(0)) < 2:
        parser.error("side by side needs 2 cores")
    tt_dir, tt_deps = Path(args.tt_dir or "-"), Path(args.tt_deps or "-")
    if not (tt_dir / TT_CONFIG).is_file() or not (tt_deps / "tyro").is_dir():
        print(SETUP_HINT, file=sys.stderr)
        sys.exit(2)
    args.tt_dir, args.tt_deps = str(tt_dir.resolve()), str(tt_deps.resolve())
    args.threads = 1  # overhead._env: one torch thread each, passive OpenMP waiting

    print(
        f"titan vs torchtitan v0.2.2, side by side, one core each: debugmodel (16 KV heads), "
        f"batch {args.batch} x {args.seq_len}, bf16 autocast; modes {' '.join(args.modes) or '-'}: "
        f"{args.rounds} rounds x {args.steps} steps, median tokens/s of {args.log_every}-step "
        f"windows over steps {args.log_every + 1}..{args.steps}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        flavor = Path(tmp) / "debug16.json"
        flavor.write_text(json.dumps(DEBUG16))
        summary = []
        for mode in args.modes:
            print(
                f"{'mode':<8} {'round':>5} {'titan tok/s':>12} {'tt tok/s':>10} {'ratio':>6}  loss titan/tt"
            )
            titan_all, tt_all, ratios = [], [], []
            for i in range(args.rounds):
                t, tt, t_loss, tt_loss = one_round(args, mode, flavor, i)
                titan_all.append(t)
                tt_all.append(tt)
                ratios.append(t / tt)
                print(
                    f"{mode:<8} {i + 1:>5} {t:>12,.0f} {tt:>10,.0f} {t / tt:>6.3f}  "
                    f"{t_loss:.3f}/{tt_loss:.3f}",
                    flush=True,
                )
            summary.append(
                f"{mode}: titan {statistics.median(titan_all):,.0f} tok/s, torchtitan "
                f"{statistics.median(tt_all):,.0f} tok/s, ratio {statistics.median(ratios):.3f}"
            )
            print(summary[-1], flush=True)
        if args.memory_step:
            titan_mib, tt_mib = memory(args, flavor)
            summary.append(
                f"memory: titan {titan_mib:.1f} MiB, torchtitan {tt_mib:.1f} MiB "
                f"(eager, peak of step {args.memory_step})"
            )
            print(summary[-1])
    print("\n".join(["", "summary:", *summary]))


if __name__ == "__main__":
    main()
