"""Per-rank probe for the chunked-loss equality tests on 2 ranks (started by torchrun).

``python -m torch.distributed.run --nproc-per-node=2 chunked_probe.py SCENARIOS.json OUT.json DIR``

For each scenario it builds two real Trainers with the same seed, one with the
scenario's plugins and one with ``chunked-loss`` added (``chunk_tokens`` per chunk), runs forward, loss and
backward of the same micro-batch through each (``Trainer.compute_loss``, as a
training step does), and rank 0 writes both losses (mean over data-parallel
ranks) and every parameter's full gradient difference (DTensors gathered).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def loss_and_grads(
    spec: dict[str, Any], plugins: list[str], folder: Path, extra: list[Any] = ()
) -> tuple[float, dict]:
    from torch.distributed.tensor import DTensor

    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    job = prepare_job(
        None,
        plugins=plugins,
        overrides=[
            *(tuple(kv) for kv in [*spec["overrides"], *extra]),
            ("job.dump_folder", str(folder)),
        ],
    )
    trainer = Trainer(job)
    p = trainer.parallel
    # Data-parallel ranks read different batches, TP ranks the same one (as the loader does).
    g = torch.Generator().manual_seed(1000 + p.dp_rank)
    c = trainer.config.training
    tokens = torch.randint(
        0, trainer.model_args.vocab_size, (c.local_batch_size, c.seq_len + 1), generator=g
    )
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    with trainer.train_context():
        with trainer.autocast():
            out = trainer.model(inputs)
        loss, _ = trainer.compute_loss(out, labels)
        loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    grads = {}
    for name, param in trainer.model.named_parameters():
        grad = param.grad
        grads[name] = (grad.full_tensor() if isinstance(grad, DTensor) else grad).detach().clone()
    return float(mean) / p.world_size, grads  # every rank holds its data-parallel batch's loss


def main() -> None:
    spec_path, out_path, base = (Path(a) for a in sys.argv[1:4])
    scenarios = json.loads(spec_path.read_text())
    findings: dict[str, Any] = {}
    for name, spec in scenarios.items():
        plain_loss, plain = loss_and_grads(spec, spec["plugins"], base / f"{name}-plain")
        chunk_loss, chunked = loss_and_grads(
            spec,
            [*spec["plugins"], "chunked-loss"],
            base / f"{name}-chunked",
            [["chunked_loss.chunk_tokens", str(spec["chunk_tokens"])]],
        )
        assert plain.keys() == chunked.keys(), (plain.keys(), chunked.keys())
        findings[name] = {
            "plain_loss": plain_loss,
            "chunked_loss": chunk_loss,
            "grads": {
                k: {
                    "max_abs_diff": float((plain[k] - chunked[k]).abs().max()),
                    "max_abs": float(plain[k].abs().max()),
                    "allclose": bool(torch.allclose(chunked[k], plain[k], rtol=1e-4, atol=1e-6)),
                }
                for k in plain
            },
        }
        dist.barrier()
    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(findings))
    dist.barrier()


if __name__ == "__main__":
    main()
