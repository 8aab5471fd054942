"""The GPU benchmark: an 8B-shaped Llama 3, baseline vs compile vs compile+fp8 (+ fp8-ag).

    uv run python benchmarks/gpu.py                   # on a machine with one or more GPUs
    uv run python benchmarks/gpu.py --layers 8 --steps 30 --seq-len 4096

The model has Llama 3 8B's width (dim 4096, 32 heads, 8 KV heads, SwiGLU
14336, vocabulary 128256) with fewer layers (``--layers``, default 16 of 32)
so that it trains on one GPU with AdamW; the layer count is written into the
results. Each set is a real `titan run` (see throughput.py); with two or more
GPUs the float8 all-gather set (fp8-ag, which needs FSDP) runs on all of them.
Results (tokens/s per device, TFLOP/s, MFU against the device's peak, peak
reserved memory, final loss) are printed and written to benchmarks/RESULTS.md
with the hardware.

It needs a GPU. ``--cpu-check`` runs the same sets on a CPU at a small shape
(dim 256, 2 layers, 2 processes standing in for 2 GPUs) and only prints the
table: GPU time is lent rarely, so the script is checked here first.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
from pathlib import Path

from throughput import HEADER, row, run_set, summarize

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


CPU_CHECK_SHAPE = {"dim": 256, "n_heads": 8, "n_kv_heads": 2, "multiple_of": 256}
"""--cpu-check: 8B's head ratio (4 query heads per KV head) at a width a CPU trains in seconds."""


def model_file(folder: Path, layers: int, cpu_check: bool = False) -> Path:
    """A titan_model.json (model.flavor accepts one) with 8B's shape and ``layers`` layers."""
    from titan.models.llama.args import LLAMA3_FLAVORS

    args = dataclasses.replace(LLAMA3_FLAVORS["8B"], n_layers=layers)
    if cpu_check:
        args = dataclasses.replace(args, **CPU_CHECK_SHAPE)
    path = folder / "titan_model.json"
    path.write_text(json.dumps({"family": "llama3", "flavor": None, "args": args.to_dict()}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--cpu-check",
        action="store_true",
        help="run the sets on a CPU at a small shape, print the table, write nothing",
    )
    args, extra = parser.parse_known_args()
    extra = [e for e in extra if e != "--"]

    import torch

    if args.cpu_check:
        args.layers, args.seq_len, args.steps, args.warmup = 2, 128, 6, 2
        gpus, device = 2, "CPU check: gloo processes standing in for GPUs,"
    elif not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu.py needs a GPU; on a CPU run benchmarks/throughput.py, or "
            "benchmarks/gpu.py --cpu-check to check this script"
        )
    else:
        gpus = torch.cuda.device_count()
        device = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        flavor = model_file(Path(tmp), args.layers, args.cpu_check)
        common = [
            f"--model.flavor={flavor}",
            f"--training.seq_len={args.seq_len}",
            f"--training.local_batch_size={args.batch}",
            "--lr_scheduler.warmup_steps=2",
            *extra,
        ]
        sets = [("baseline", "", 1), ("compile", "compile", 1), ("compile+fp8", "compile,fp8", 1)]
        if gpus >= 2:
            sets += [
                (f"baseline x{gpus}", "", gpus),
                (f"compile+fp8+fp8-ag x{gpus}", "compile,fp8,fp8-ag", gpus),
            ]
        lines = [HEADER]
        shape = "small shape (dim 256)" if args.cpu_check else "Llama 3 8B shape"
        print(f"{device} x{gpus}; {shape} with {args.layers} of 32 layers")
        print(HEADER)
        failed = []
        for name, plugins, nproc in sets:
            records = run_set(plugins, args.steps, nproc, common)
            if records:
                lines.append(row(name, summarize(records, args.warmup)))
                print(lines[-1], flush=True)
            else:
                failed.append(name)
    if args.cpu_check:
        print("CPU check: nothing written to benchmarks/RESULTS.md")
        sys.exit(f"failed sets: {', '.join(failed)}" if failed else 0)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS.write_text(
        "# GPU benchmark results\n\n"
        f"Written by `benchmarks/gpu.py` on {when}.\n\n"
        f"- hardware: {gpus} x {device}, torch {torch.__version__}, CUDA {torch.version.cuda}\n"
        f"- model: Llama 3 8B shape (dim 4096, 32 heads, 8 KV heads, FFN 14336, vocab 128256) "
        f"with **{args.layers} of 32 layers** so it fits one GPU with AdamW\n"
        f"- batch {args.batch} x seq_len {args.seq_len}, {args.steps} steps, medians after "
        f"step {args.warmup}; MFU against the device's dense bf16 peak (float8 peak for fp8 "
        "sets); memory is peak reserved\n\n"
        "```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {RESULTS}")
    if failed:
        sys.exit(f"failed sets: {', '.join(failed)} (their errors are above)")


if __name__ == "__main__":
    main()
