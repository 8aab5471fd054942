"""Throughput benchmark: tokens/s per device, achieved TFLOP/s and MFU, per plugin set.

    uv run python benchmarks/throughput.py                                  # baseline vs compile on CPU
    uv run python benchmarks/throughput.py --sets "" compile fp8 "compile,fp8" --steps 30
    uv run python benchmarks/throughput.py --nproc 2 --sets "" "fp8,fp8-ag" -- --training.seq_len=128

Each set runs `titan run` in a subprocess (the real CLI, the real trainer) and
reads its metrics.jsonl. The first `--warmup` steps (compilation, allocator
warm-up) are left out of the figures. FLOPs per token follow the usual
estimate for decoder-only transformers: 6 x (parameters without embeddings)
+ 12 x layers x dim x seq_len (attention). MFU is printed where the device's
peak is known (H100/H200 bf16 dense: 989 TFLOP/s); on a CPU only TFLOP/s are.
This is a benchmark that prints figures, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def flops_per_token(model_name: str, flavor: str, seq_len: int, vocab_size: int = 0) -> float:
    from titan.core.model_info import count_parameters
    from titan.core.plugins import load_plugins
    from titan.core.registry import ModelRegistry

    registry = ModelRegistry()
    load_plugins().pm.hook.titan_register_models(registry=registry)
    family = registry.get(model_name)
    args = family.flavor(flavor)
    if vocab_size:
        args = args.with_vocab(vocab_size)
    params = count_parameters(family, args) - args.vocab_size * args.dim  # embedding is a lookup
    return 6 * params + 12 * args.n_layers * args.dim * seq_len


def device_peak() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return name, peak


def run_set(plugins: str, args: argparse.Namespace, extra: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "titan.core.cli",
            "run",
            *([args.config] if args.config else []),
            f"--training.steps={args.steps}",
            "--metrics.log_freq=1",
            f"--job.dump_folder={tmp}",
            *(["--plugins", plugins] if plugins else []),
            *(["--nproc", str(args.nproc)] if args.nproc else []),
            *extra,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"[{plugins or 'baseline'}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return []
        lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="", help="a job TOML (default: the debug job)")
    parser.add_argument(
        "--sets", nargs="*", default=["", "compile"], help='plugin sets; "" is the baseline'
    )
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=0)
    parser.add_argument("--model", default="llama3")
    parser.add_argument("--flavor", default="debug")
    parser.add_argument(
        "--seq-len",
        type=int,
        default=256,
        help="for the FLOP estimate; pass --training.seq_len too if not 256",
    )
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    device, peak = device_peak()
    fpt = flops_per_token(args.model, args.flavor, args.seq_len)
    print(
        f"device: {device}; model {args.model}/{args.flavor}; {fpt / 1e6:.1f} MFLOP/token; "
        f"{args.steps} steps, first {args.warmup} left out"
    )
    print(
        f"{'plugins':<24} {'tokens/s/device':>16} {'TFLOP/s/device':>15} {'MFU':>7} {'final loss':>11}"
    )
    for plugins in args.sets:
        records = [r for r in run_set(plugins, args, extra) if r["step"] > args.warmup]
        if not records:
            continue
        tps = statistics.median(r["tokens_per_second"] for r in records)
        tflops = tps * fpt / 1e12
        mfu = f"{100 * tflops / peak:6.1f}%" if peak else "    n/a"
        print(
            f"{plugins or 'baseline':<24} {tps:>16,.0f} {tflops:>15.3f} {mfu:>7} {records[-1]['loss']:>11.4f}"
        )


if __name__ == "__main__":
    main()
