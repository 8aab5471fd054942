"""Overhead of titan's trainer against a minimal hand-written PyTorch loop.

    uv run python benchmarks/overhead.py                      # the default debug job
    uv run python benchmarks/overhead.py --rounds 5 --steps 20 -- --training.seq_len=128

Both sides train the same model (titan's Llama code, built and initialised
the same way), on the same corpus (titan's bundled one), with the same batch,
precision (bf16 autocast on one process), optimizer (fused AdamW), LR warmup
and gradient clipping. The plain side is what a person writes by hand: a
tensor of token ids sliced into windows, forward, loss, backward, clip, step,
a loss printed every ``--log-every`` steps. titan's side is `titan run`
itself (the CLI, the plugins, the console and metrics.jsonl writers, its data
loader), logging at the same frequency.

Both sides get ``--threads`` torch threads (default 1, with passive OpenMP
waiting): on a shared, oversubscribed machine spinning OpenMP threads make
step times swing by 2x, which would drown the difference being measured.

The two alternate in rounds (titan, plain, plain, titan, ...) in one run, so
whatever else the machine does hits both alike. Each side's tokens/s come
from wall time between two log steps after ``--log-every`` warm-up steps
(everything the loop does counts, logging included). The overhead is the
median over rounds of 1 - titan/plain. A benchmark that prints figures; it
asserts nothing.
"""

from __future__ import annotations

import argparse
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
    """The same threads for both sides."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
    }


def run_plain(args: argparse.Namespace, extra: list[str]) -> float:
    cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps)]
    cmd += ["--log-every", str(args.log_every), "--", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(args))
    if proc.returncode:
        sys.exit(f"plain loop failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    t = out["times"]
    first = args.log_every - 1  # after the step-`log_every` log, as on titan's side
    return out["tokens_per_step"] * (args.steps - args.log_every) / (t[-1] - t[first])


def run_titan(args: argparse.Namespace, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "titan.core.cli", "run", f"--training.steps={args.steps}"]
        cmd += [f"--metrics.log_freq={args.log_every}", f"--job.dump_folder={tmp}", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(args))
        if proc.returncode:
            sys.exit(f"titan run failed:\n{proc.stderr[-3000:]}")
        recs = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in recs}
    a, b = by_step[args.log_every], by_step[args.steps]
    tokens = a["tokens_per_second"] * a["step_time"]  # tokens per step of this rank
    return tokens * (args.steps - args.log_every) / (b["elapsed"] - a["elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="a multiple of --log-every")
    parser.add_argument("--log-every", type=int, default=5, help="also the warm-up steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    if args.worker:
        plain_loop(args.steps, args.log_every, extra)
        return
    if args.steps % args.log_every or args.steps <= args.log_every:
        parser.error("--steps must be a multiple of --log-every, and larger")
    print(
        f"titan vs a hand-written loop: {args.rounds} rounds, {args.steps} steps each, "
        f"tokens/s over steps {args.log_every + 1}..{args.steps}; {args.threads} thread(s); extra: {' '.join(extra) or '-'}"
    )
    print(f"{'round':>5} {'titan tok/s':>12} {'plain tok/s':>12} {'titan/plain':>12}")
    ratios, titan_all, plain_all = [], [], []
    for i in range(args.rounds):
        # Alternate who goes first, so a slow spell of the machine favours neither.
        if i % 2 == 0:
            titan, plain = run_titan(args, extra), run_plain(args, extra)
        else:
            plain, titan = run_plain(args, extra), run_titan(args, extra)
        titan_all.append(titan)
        plain_all.append(plain)
        ratios.append(titan / plain)
        print(f"{i + 1:>5} {titan:>12,.0f} {plain:>12,.0f} {titan / plain:>12.3f}", flush=True)
    med_t, med_p = statistics.median(titan_all), statistics.median(plain_all)
    print(f"{'med':>5} {med_t:>12,.0f} {med_p:>12,.0f} {statistics.median(ratios):>12.3f}")
    print(f"overhead: {100 * (1 - statistics.median(ratios)):.1f}%")


if __name__ == "__main__":
    main()
