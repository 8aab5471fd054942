"""Per-rank probe for the multi-rank optimization tests (started by torchrun, not by pytest).

``python -m torch.distributed.run --nproc-per-node=N optim_probe.py SCENARIOS.json OUT.json DIR``

For each scenario it builds the real ``Trainer`` (``prepare_job`` + every
build phase, as ``python -m titan.core.train`` does), records what the
plugins did to the model (parameter types, DTensor placements, the float8
weight wrapper), then trains with the collectives instrumented: every FSDP
all-gather's dtype and size, the dtype FSDP gathers each parameter in, the
first block's output and the logits' layout. Rank 0 writes the findings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.")


def clean(name: str) -> str:
    for w in WRAPPERS:
        name = name.replace(w, "")
    return name


class Recorder:
    """Wraps the collectives FSDP2 uses, recording what they move while ``on``."""

    def __init__(self) -> None:
        from torch.distributed.fsdp._fully_shard import _fsdp_collectives as fc

        self.on = False
        self.all_gathers: list[dict[str, Any]] = []
        self.param_dtypes: list[str] = []
        self._fc = fc
        self._orig_ag = dist.all_gather_single
        self._orig_meta = fc._get_all_gather_input_metadatas

        def all_gather_single(output: Any, input: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on:
                nbytes = input.numel() * input.element_size()
                self.all_gathers.append({"dtype": str(input.dtype), "bytes": nbytes})
            return self._orig_ag(output, input, *args, **kwargs)

        def metadatas(inputs: Any) -> Any:
            if self.on:
                self.param_dtypes.extend(str(t.dtype) for ts in inputs for t in ts)
            return self._orig_meta(inputs)

        dist.all_gather_single = all_gather_single
        fc._get_all_gather_input_metadatas = metadatas

    def reset(self) -> None:
        self.all_gathers.clear()
        self.param_dtypes.clear()


def describe_params(model: torch.nn.Module) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        info: dict[str, Any] = {"type": type(p).__name__, "global_shape": list(p.shape)}
        if isinstance(p, DTensor):
            info["placements"] = [str(x) for x in p.placements]
            info["mesh_dims"] = list(p.device_mesh.mesh_dim_names or ())
            info["local_type"] = type(p._local_tensor).__name__
            info["local_shape"] = list(p._local_tensor.shape)
        out[clean(name)] = info
    return out


def module_types(model: torch.nn.Module) -> dict[str, str]:
    return {clean(n): type(m).__name__ for n, m in model.named_modules() if n}


def watch_layouts(model: torch.nn.Module, found: dict[str, Any]) -> list[Any]:
    """Record the first block's output and the logits (local shape, DTensor placements)."""
    from torch.distributed.tensor import DTensor

    def record(key: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if key in found:
                return
            entry = {"type": type(output).__name__, "shape": list(output.shape)}
            if isinstance(output, DTensor):
                entry["placements"] = [str(x) for x in output.placements]
                entry["local_shape"] = list(output._local_tensor.shape)
            found[key] = entry

        return hook

    first_block = next(iter(model.layers.values()))
    return [
        first_block.register_forward_hook(record("block0_output")),
        model.output.register_forward_hook(record("logits")),
    ]


def float8_scales(model: torch.nn.Module, parallel: Any) -> list[dict[str, float]]:
    """Each float8 weight's precomputed scale next to float8 max / amax of the *whole* weight."""
    from torch.distributed.tensor import DTensor
    from torchao.float8.float8_linear import Float8Linear
    from torchao.float8.fsdp_utils import WeightWithDynamicFloat8CastTensor

    rows = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not (isinstance(m, Float8Linear) and isinstance(w, DTensor)):
            continue
        local = w._local_tensor
        if not isinstance(local, WeightWithDynamicFloat8CastTensor):
            continue
        amax = local._tensor.detach().abs().max().float()
        dist.all_reduce(amax, op=dist.ReduceOp.MAX)  # over every rank's shard
        scale = local._precomputed_scale
        rows.append(
            {
                "name": clean(name),
                "scale": None if scale is None else float(scale),
                "expected": float(torch.finfo(torch.float8_e4m3fn).max / amax),
                "local_amax": float(local._tensor.detach().abs().max()),
                "amax": float(amax),
            }
        )
    return rows


def run_scenario(name: str, spec: dict[str, Any], base: Path, rec: Recorder) -> dict[str, Any]:
    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer

    overrides = [tuple(kv) for kv in spec.get("overrides", [])]
    job = prepare_job(
        None,
        plugins=spec.get("plugins", []),
        overrides=[*overrides, ("job.dump_folder", str(base / name))],
    )
    trainer = Trainer(job)
    model = trainer.model
    found: dict[str, Any] = {
        "active": sorted(job.plugins.active),
        "params": describe_params(model),
        "modules": module_types(model),
        "world_size": trainer.parallel.world_size,
        "degrees": [trainer.parallel.dp_replicate, trainer.parallel.dp_shard, trainer.parallel.tp],
    }
    handles = watch_layouts(model, found)
    rec.reset()
    rec.on = True
    result = trainer.train()
    rec.on = False
    for h in handles:
        h.remove()
    found["result"] = result
    found["all_gathers"] = list(rec.all_gathers)
    found["param_all_gather_dtypes"] = sorted(set(rec.param_dtypes))
    found["float8_scales"] = float8_scales(model, trainer.parallel)
    dist.barrier()
    return found


def main() -> None:
    from titan.core.quiet import quiet_library_noise

    quiet_library_noise()
    spec_path, out_path, base = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    scenarios = json.loads(spec_path.read_text())
    rec = Recorder()
    findings = {name: run_scenario(name, spec, base, rec) for name, spec in scenarios.items()}
    if dist.get_rank() == 0:
        out_path.write_text(json.dumps(findings, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
