"""Plugin sets side by side: tokens/s per device, TFLOP/s, MFU, peak memory, final loss.

    uv run python benchmarks/throughput.py                                  # baseline, compile, ac, fp8
    uv run python benchmarks/throughput.py --sets "" compile --steps 30
    uv run python benchmarks/throughput.py --nproc 2 --sets "" "fp8,fp8-ag" -- --training.seq_len=128

Each set runs `titan run` in a subprocess (the real CLI, the real trainer)
with ``metrics.log_freq=1`` and reads its metrics.jsonl: the figures are the
trainer's own (see docs/metrics.md): tokens/s per device (TP-correct),
TFLOP/s from 6 x non-embedding parameters + 12 x layers x dim x seq_len FLOPs
per token, MFU against the device's peak (GPU table, or on a CPU a measured
matmul peak), peak memory (GPU reserved, or CPU RSS). The first ``--warmup``
steps (compilation, allocator warm-up) are left out of the medians. A
benchmark that prints figures, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_set(
    plugins: str, steps: int, nproc: int, extra: list[str], config: str = ""
) -> list[dict[str, Any]]:
    """Run one plugin set; its metrics.jsonl records ([] if the run failed, with its error shown)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "titan.core.cli", "run", *([config] if config else [])]
        cmd += [f"--training.steps={steps}", "--metrics.log_freq=1", f"--job.dump_folder={tmp}"]
        cmd += [*(["--plugins", plugins] if plugins else [])]
        cmd += [*(["--nproc", str(nproc)] if nproc else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"[{plugins or 'baseline'}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return []
        lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def summarize(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Medians over the steps after warm-up; memory is the highest peak of the run."""
    steady = [r for r in records if r["step"] > warmup] or records
    mem_key = "memory_reserved" if "memory_reserved_gib" in records[0] else "memory_rss"
    peak = max(records, key=lambda r: r.get(f"{mem_key}_gib", 0.0))
    med = lambda key: statistics.median(r.get(key, 0.0) for r in steady)  # noqa: E731
    return {
        "tokens_per_second": med("tokens_per_second"),
        "tokens_per_second_total": med("tokens_per_second_total"),
        "tflops": med("tflops"),
        "mfu": med("mfu") if all("mfu" in r for r in steady) else None,
        "memory_gib": peak.get(f"{mem_key}_gib", 0.0),
        "memory_pct": peak.get(f"{mem_key}_pct", 0.0),
        "memory_kind": "reserved" if mem_key == "memory_reserved" else "RSS",
        "final_loss": records[-1]["loss"],
        "steps": records[-1]["step"],
    }


HEADER = (
    f"{'plugins':<22} {'tok/s/device':>13} {'tok/s total':>12} {'TFLOP/s':>8} {'MFU':>7} "
    f"{'peak memory':>18} {'final loss':>11}"
)


def row(name: str, s: dict[str, Any]) -> str:
    mfu = f"{s['mfu']:6.1f}%" if s["mfu"] is not None else "    n/a"
    mem = f"{s['memory_gib']:.2f} GiB {s['memory_kind']} ({s['memory_pct']:.0f}%)"
    return (
        f"{name:<22} {s['tokens_per_second']:>13,.0f} {s['tokens_per_second_total']:>12,.0f} "
        f"{s['tflops']:>8.3f} {mfu:>7} {mem:>18} {s['final_loss']:>11.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="", help="a job TOML (default: the debug job)")
    parser.add_argument(
        "--sets",
        nargs="*",
        default=["", "compile", "ac", "fp8"],
        help='plugin sets; "" is the baseline',
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=0)
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]
    print(
        f"{args.steps} steps per set, first {args.warmup} left out; nproc {args.nproc or 1}; "
        f"extra: {' '.join(extra) or '-'}"
    )
    print(HEADER)
    for plugins in args.sets:
        records = run_set(plugins, args.steps, args.nproc, extra, args.config)
        if records:
            print(row(plugins or "baseline", summarize(records, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
