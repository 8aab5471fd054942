"""Overhead of titan's trainer against a minimal hand-written PyTorch loop.

    uv run python benchmarks/overhead.py                      # the default debug job
    uv run python benchmarks/overhead.py --rounds 4 --steps 20 -- --training.seq_len=128

Both sides train the same model (titan's Llama code, built and initialised
the same way), on the same corpus (titan's bundled one), with the same batch,
precision (bf16 autocast on one process), optimizer (fused AdamW), LR warmup
and gradient clipping. The plain side is what a person writes by hand: a
tensor of token ids sliced into windows, forward, loss, backward, clip, step,
a loss printed every ``--log-every`` steps. titan's side is `titan run`
itself (the CLI, the plugins, the console and metrics.jsonl writers, its data
loader), logging at the same frequency.

Both sides get the same glibc malloc thresholds (titan fixes them on CPU
runs, see titan.core.host_malloc; the plain side through glibc's environment)
and ``--threads`` torch threads (default 1, with passive OpenMP waiting): on
a shared, oversubscribed machine spinning OpenMP threads make step times
swing by 2x, which would drown the difference being measured.

The two run side by side, each pinned to its own core (swapped every round),
so whatever else the machine does slows both at the same moment: on a shared
VM the speed of one process drifts by 10 to 30% over minutes, far more than
the difference being measured, and taking turns left that drift in.
``--one-after-the-other`` takes turns instead (for more threads or one core).
Each side's tokens/s come from wall time between log steps after ``--log-every`` warm-up steps
(everything the loop does counts, logging included): the median of its
windows of ``--log-every`` steps, so that a stall of the machine in one window
does not decide the round. The overhead is the median over rounds of
1 - titan/plain. A benchmark that prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def plain_loop(steps: int, log_every: int, extra: list[str]) -> None:
    """The hand-written loop (run as a subprocess); prints one JSON line with its step times."""
    import torch
    import torch.nn.functional as F

    from titan.core.launch import prepare_job
    from titan.core.tokenizers import load_tokenizer

    # titan's config only supplies the same hyperparameters; nothing of the trainer runs.
    overrides = [tuple(e.removeprefix("--").split("=", 1)) for e in extra]
    job = prepare_job(None, [], overrides)
    c = job.config
    family = job.models.get(c.model.name)
    args = family.flavor(c.model.flavor)
    torch.manual_seed(c.training.seed)
    model = family.build(args)
    with torch.no_grad():
        model.init_weights(buffer_device=torch.device("cpu"))
    model.train()
    o = c.optimizer
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=True,
    )
    warmup = c.lr_scheduler.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / (warmup + 1)))

    batch, seq = c.training.local_batch_size, c.training.seq_len
    tok = load_tokenizer(c.model.tokenizer_path)
    corpus = Path(__file__).resolve().parents[1] / "packages/core/src/titan/core/assets"
    ids: list[int] = []
    need = (steps + 1) * batch * (seq + 1)
    with (corpus / "tinyshakespeare/train.jsonl").open() as f:
        for line in f:
            ids += tok.encode(json.loads(line)["text"], bos=True, eos=True)
            if len(ids) >= need:
                break
    data = torch.tensor(ids[:need]).view(-1, seq + 1)

    times = []
    for step in range(steps):
        window = data[step * batch : (step + 1) * batch]
        x, y = window[:, :-1], window[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.training.max_norm, foreach=True)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0 or step == 0:
            print(f"step {step + 1} loss {loss.item():.4f}", file=sys.stderr)
        times.append(time.perf_counter())
    print(json.dumps({"times": times, "tokens_per_step": batch * seq}))


def _env(args: argparse.Namespace) -> dict[str, str]:
    """The same threads and the same malloc thresholds for both sides.

    titan fixes glibc's thresholds on CPU runs (titan.core.host_malloc); the
    plain side gets the same ones through glibc's environment variables, so
    that the figure measures the trainer, not which allocator state each
    process happened into (page faults per step differed by up to 2x).
    """
    from titan.core.host_malloc import MMAP_THRESHOLD, TRIM_THRESHOLD

    return {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }


def _start(cmd: list[str], args: argparse.Namespace, cpu: int | None) -> subprocess.Popen:
    """Start one side, pinned to ``cpu`` when the sides run together."""
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(args),
        preexec_fn=pin,
    )


def _finish(proc: subprocess.Popen, what: str) -> str:
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"{what} failed:\n{err[-3000:]}")
    return out


def start_plain(args: argparse.Namespace, extra: list[str], cpu: int | None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps)]
    return _start(cmd + ["--log-every", str(args.log_every), "--", *extra], args, cpu)


def plain_rate(args: argparse.Namespace, proc: subprocess.Popen) -> float:
    out = json.loads(_finish(proc, "plain loop").strip().splitlines()[-1])
    t = out["times"]  # t[i]: end of step i + 1, after its log line
    ends = [t[step - 1] for step in range(args.log_every, args.steps + 1, args.log_every)]
    return _median_window_rate(ends, out["tokens_per_step"], args.log_every)


def _median_window_rate(ends: list[float], tokens_per_step: float, log_every: int) -> float:
    """Tokens/s of the median window between consecutive log steps.

    A median, not the whole span: on a shared machine one window now and then
    takes twice as long for reasons outside the process, and that would decide
    the round. Both sides are cut into the same windows, logging included.
    """
    return statistics.median(
        tokens_per_step * log_every / (b - a) for a, b in itertools.pairwise(ends)
    )


def start_titan(
    args: argparse.Namespace, extra: list[str], cpu: int | None, folder: str
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "titan.core.cli", "run", f"--training.steps={args.steps}"]
    cmd += [f"--metrics.log_freq={args.log_every}", f"--job.dump_folder={folder}", *extra]
    return _start(cmd, args, cpu)


def titan_rate(args: argparse.Namespace, proc: subprocess.Popen, folder: str) -> float:
    _finish(proc, "titan run")
    recs = [json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in recs}
    logs = [by_step[step] for step in range(args.log_every, args.steps + 1, args.log_every)]
    tokens = logs[0]["tokens_per_second"] * logs[0]["step_time"]  # tokens per step of this rank
    return _median_window_rate([r["elapsed"] for r in logs], tokens, args.log_every)


def one_round(args: argparse.Namespace, extra: list[str], i: int) -> tuple[float, float]:
    """titan's and the plain loop's tokens/s in round ``i``."""
    with tempfile.TemporaryDirectory() as folder:
        if args.together:
            # Side by side, one core each (swapped every round): a slow spell of the
            # machine slows both at the same moment.
            cpus = sorted(os.sched_getaffinity(0))[:2]
            titan_cpu, plain_cpu = cpus if i % 2 == 0 else cpus[::-1]
            titan = start_titan(args, extra, titan_cpu, folder)
            plain = start_plain(args, extra, plain_cpu)
            return titan_rate(args, titan, folder), plain_rate(args, plain)
        # One after the other; who goes first alternates, so neither is favoured.
        if i % 2 == 0:
            t = titan_rate(args, start_titan(args, extra, None, folder), folder)
            return t, plain_rate(args, start_plain(args, extra, None))
        p = plain_rate(args, start_plain(args, extra, None))
        return titan_rate(args, start_titan(args, extra, None, folder), folder), p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30, help="a multiple of --log-every")
    parser.add_argument("--log-every", type=int, default=5, help="also the warm-up steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    parser.add_argument(
        "--one-after-the-other",
        dest="together",
        action="store_false",
        help="run the sides in turn (default: side by side, one core each, with 1 thread)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    if args.worker:
        plain_loop(args.steps, args.log_every, extra)
        return
    if args.steps % args.log_every or args.steps <= args.log_every:
        parser.error("--steps must be a multiple of --log-every, and larger")
    if args.together and (args.threads != 1 or len(os.sched_getaffinity(0)) < 2):
        parser.error("side by side needs --threads 1 and 2 cores; add --one-after-the-other")
    how = "side by side, one core each" if args.together else "one after the other"
    print(
        f"titan vs a hand-written loop, {how}: {args.rounds} rounds, {args.steps} steps each, "
        f"median tokens/s of {args.log_every}-step windows over steps {args.log_every + 1}..{args.steps}; {args.threads} thread(s); extra: {' '.join(extra) or '-'}"
    )
    print(f"{'round':>5} {'titan tok/s':>12} {'plain tok/s':>12} {'titan/plain':>12}")
    ratios, titan_all, plain_all = [], [], []
    for i in range(args.rounds):
        titan, plain = one_round(args, extra, i)
        titan_all.append(titan)
        plain_all.append(plain)
        ratios.append(titan / plain)
        print(f"{i + 1:>5} {titan:>12,.0f} {plain:>12,.0f} {titan / plain:>12.3f}", flush=True)
    med_t, med_p = statistics.median(titan_all), statistics.median(plain_all)
    print(f"{'med':>5} {med_t:>12,.0f} {med_p:>12,.0f} {statistics.median(ratios):>12.3f}")
    print(f"overhead: {100 * (1 - statistics.median(ratios)):.1f}%")


if __name__ == "__main__":
    main()
