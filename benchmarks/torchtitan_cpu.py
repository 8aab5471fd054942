"""Run torchtitan v0.2.2's own trainer (``torchtitan.train``) on a CPU, for vs_torchtitan.py.

    PYTHONPATH=$TT_DIR:$TT_DEPS python -m torch.distributed.run --standalone --nproc-per-node=1 \\
        benchmarks/torchtitan_cpu.py --job.config_file torchtitan/models/llama3/train_configs/debug_model.toml

torchtitan's trainer assumes CUDA. This points its device globals at the CPU and stubs
its CUDA memory monitor (its memory column then reads 0); nothing of torchtitan's files
is changed (a copy of ../shared/bench/torchtitan-cpu/tt_cpu.py).

With ``TT_MEMORY_STEP=N`` in the environment, step N of the run is measured with torch's
``MemTracker`` (the model and the optimizers registered, like benchmarks/memory.py does
for titan): the peak of live tensor bytes over that step, printed as one line
``MEMORY_PEAK <bytes>``. The step is wrapped from outside (``Trainer.train_step`` is
replaced by a wrapper before ``torchtitan.train.main`` builds the trainer).
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import torch

_stats: dict[str, int] = {}
torch.cpu.get_device_name = lambda *a, **k: "cpu"
torch.cpu.get_device_properties = lambda *a, **k: types.SimpleNamespace(total_memory=24 * 2**30)
torch.cpu.reset_peak_memory_stats = lambda *a, **k: None
torch.cpu.empty_cache = lambda *a, **k: None
torch.cpu.memory_stats = lambda *a, **k: _stats
torch.cpu.current_device = lambda: 0

import torchtitan.tools.utils as tu  # noqa: E402

tu.device_type, tu.device_module = "cpu", torch.cpu
import torchtitan.train  # noqa: E402  (imports every module that copies device_type)

for name, mod in list(sys.modules.items()):
    if name.startswith("torchtitan") and mod is not None:
        if getattr(mod, "device_type", None) == "cuda":
            mod.device_type = "cpu"
        if getattr(mod, "device_module", None) is torch.cuda:
            mod.device_module = torch.cpu


def track_step(step: int) -> None:
    """Measure training step ``step`` with MemTracker; print ``MEMORY_PEAK <bytes>``."""
    from torch.distributed._tools.mem_tracker import MemTracker

    trainer_class = torchtitan.train.Trainer
    train_step = trainer_class.train_step

    def measured(self: Any, data_iterator: Any) -> Any:
        if self.step != step:
            return train_step(self, data_iterator)
        tracker = MemTracker()
        tracker.track_external(*self.model_parts, *self.optimizers.optimizers)
        with tracker:
            out = train_step(self, data_iterator)
        peak = tracker.get_tracker_snapshot("peak")
        total = sum(v for d in peak.values() for k, v in d.items() if str(k) == "Total")
        print(f"MEMORY_PEAK {total}", flush=True)
        return out

    trainer_class.train_step = measured


if __name__ == "__main__":
    if os.environ.get("TT_MEMORY_STEP"):
        track_step(int(os.environ["TT_MEMORY_STEP"]))
    torchtitan.train.main(torchtitan.train.Trainer)
