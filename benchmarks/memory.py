"""Peak memory of one training step, before and after the hot-path changes (issue 15).

    uv run python benchmarks/memory.py                       # every comparison, CPU, seq 2048
    uv run python benchmarks/memory.py --cases logits fsdp --seq-len 1024 --batch 2

Each measurement is a fresh process (``torchrun`` with 2 ranks for the FSDP
case) that builds the real ``Trainer`` for the debug Llama 3 (6 blocks, dim
256, vocab 2048) at the given sequence length, runs one step to create the
optimizer state, then measures the next step under torch's ``MemTracker``
(``FSDPMemTracker`` under FSDP): the peak of live tensor bytes on the device
over forward, backward and optimizer step. That counts tensors, not allocator
caching, so on a CPU the figures are exact and reproducible.

"before" swaps back, for one change at a time, what main had before issue 15:

* ``logits``: the step kept the logits alive through backward;
* ``fsdp`` (2 ranks): the root FSDP unit held embeddings, final norm and output;
* ``ac``: per-op checkpointing kept every matmul (and the CPU attention);
* ``norm-gqa``: RMSNorm kept float32 copies of its input, GQA repeated k and v;
* ``all``: all of the single-process ones together (with per-op checkpointing).

On a GPU (``--device cuda``) the same comparisons run with bf16 FSDP, and the
script also prints ``torch.cuda.max_memory_allocated``. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

CASES = ("logits", "ac", "norm-gqa", "all", "fsdp")


def step_tracker(trainer: Any) -> Any:
    """torch's tracker of live tensor bytes for one training step of ``trainer``.

    ``FSDPMemTracker`` when FSDP sharded the model (it knows the all-gathered
    and reduce-scattered buffers), else ``MemTracker`` with the model and the
    optimizer registered. benchmarks/plan_memory.py measures with it too.
    """
    if getattr(trainer, "fsdp_applied", False):
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

        return FSDPMemTracker(trainer.model, trainer.optimizer)
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(trainer.model, trainer.optimizer)
    return tracker


# --- main's code, for "before" ------------------------------------------------


def old_train_step(self: Any, batches: list) -> tuple[Any, Any]:
    """main's ``Trainer.train_step`` memory-wise: the logits stay referenced through backward."""
    import torch

    total = torch.zeros((), device=self.device)
    for inputs, labels in batches:
        inputs, labels = inputs.to(self.device), labels.to(self.device)
        with self.train_context():
            with self.autocast():
                logits = self.model(inputs)
            loss = self.cross_entropy(logits, labels) / len(batches)
            loss.backward()
        total += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
    self.optimizer.step()
    self.lr_scheduler.step()
    self.optimizer.zero_grad(set_to_none=True)
    return total, grad_norm


def old_apply_fsdp(model: Any, mesh: Any, param_dtype: Any, reduce_dtype: Any, **_: Any) -> Any:
    """main's FSDP units: every block, then the root (embeddings, norm and output together)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = list(model.layers.values())
    for i, block in enumerate(blocks):
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    return model


def old_op_context() -> Any:
    """main's per-op policy: keep every matmul, attention (CPU too) and max."""
    import torch
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    aten = torch.ops.aten
    names = (
        "mm",
        "addmm",
        "bmm",
        "_scaled_mm",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_attention_math",
        "max",
    )
    save = {getattr(aten, n).default for n in names if hasattr(aten, n)}

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        return CheckpointPolicy.MUST_SAVE if op in save else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def use_old_norm_and_gqa() -> None:
    """main's RMSNorm (float32 input copies kept for backward) and GQA (repeat_interleave)."""
    import torch.nn.functional as F

    from titan.models.llama import model as llama

    def norm_forward(self: Any, x: Any) -> Any:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)

    def attention_forward(self: Any, x: Any, freqs_cis: Any) -> Any:
        bs, seqlen, _ = x.shape
        xq = self.wq(x).view(bs, seqlen, -1, self.head_dim)
        xk = self.wk(x).view(bs, seqlen, -1, self.head_dim)
        xv = self.wv(x).view(bs, seqlen, -1, self.head_dim)
        xq, xk = llama.apply_rotary_emb(xq, xk, freqs_cis)
        repeats = xq.shape[2] // xk.shape[2]
        if repeats > 1:
            xk = xk.repeat_interleave(repeats, dim=2)
            xv = xv.repeat_interleave(repeats, dim=2)
        out = F.scaled_dot_product_attention(
            xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2), is_causal=True
        )
        return self.wo(out.transpose(1, 2).reshape(bs, seqlen, -1))

    llama.RMSNorm.forward = norm_forward
    llama.Attention.forward = attention_forward


# --- one measurement (a worker process) -----------------------------------------


def worker(case: str, variant: str, args: argparse.Namespace) -> None:
    import torch

    from titan.core.builtin import fsdp
    from titan.core.launch import prepare_job
    from titan.core.parallel import shutdown_parallel
    from titan.core.trainer import Trainer

    before = variant == "before"
    ac = case in ("ac", "all")
    if before and case in ("norm-gqa", "all"):
        use_old_norm_and_gqa()
    if before and case == "fsdp":
        fsdp.apply_fsdp = old_apply_fsdp
    bf16 = args.device == "cuda" or case != "fsdp"  # gloo FSDP runs fp32 (exact); CPU autocast bf16
    with tempfile.TemporaryDirectory() as dump:
        overrides = [
            ("model.flavor", "debug"),
            ("training.seq_len", str(args.seq_len)),
            ("training.local_batch_size", str(args.batch)),
            ("training.mixed_precision_param", "bfloat16" if bf16 else "float32"),
            ("job.dump_folder", dump),
        ]
        if ac:
            overrides += [("ac.mode", "selective"), ("ac.selective_ac_option", "op")]
        job = prepare_job(None, plugins=["ac"] if ac else [], overrides=overrides)
        trainer = Trainer(job)
        if before and ac:
            for block in trainer.model.layers.values():
                block.checkpoint_fn.keywords["context_fn"] = old_op_context
        step = trainer.train_step
        if before and case in ("logits", "all"):
            step = old_train_step.__get__(trainer)
        data = iter(trainer.dataloader)
        step([next(data)])  # optimizer state exists from here on
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tracker = step_tracker(trainer)
        batch = next(data)
        with tracker:
            step([batch])
        peak = tracker.get_tracker_snapshot("peak")
        total = sum(v for d in peak.values() for k, v in d.items() if str(k) == "Total")
        result = {"case": case, "variant": variant, "rank": trainer.parallel.rank, "peak": total}
        if args.device == "cuda":
            result["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
        print("RESULT " + json.dumps(result), flush=True)
        shutdown_parallel()


def measure(case: str, variant: str, args: argparse.Namespace) -> list[dict]:
    me = [os.path.abspath(__file__), "--worker", case, variant]
    me += ["--seq-len", str(args.seq_len), "--batch", str(args.batch), "--device", args.device]
    if case == "fsdp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
        cmd += ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", *me]
    else:
        cmd = [sys.executable, *me]
    env = dict(os.environ, OMP_NUM_THREADS="1" if case == "fsdp" else "2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    results = [
        json.loads(line.split("RESULT ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if proc.returncode or not results:
        print(f"[{case} {variant}] failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args)
        return
    mib = 2**20
    print(f"debug Llama 3, batch {args.batch} x {args.seq_len} tokens, {args.device}")
    print(f"{'change':<10} {'before MiB':>11} {'after MiB':>10} {'saved MiB':>10} {'saved':>6}")
    for case in args.cases:
        before = measure(case, "before", args)
        after = measure(case, "after", args)
        if not before or not after:
            continue
        b = max(r["peak"] for r in before) / mib  # the worst rank
        a = max(r["peak"] for r in after) / mib
        print(f"{case:<10} {b:>11.1f} {a:>10.1f} {b - a:>10.1f} {100 * (b - a) / b:>5.0f}%")
        if args.device == "cuda":
            cb = max(r["cuda_max_allocated"] for r in before) / mib
            ca = max(r["cuda_max_allocated"] for r in after) / mib
            print(f"{'':<10} {cb:>11.1f} {ca:>10.1f}   (torch.cuda.max_memory_allocated)")


if __name__ == "__main__":
    main()
