"""One checker for the CLI and the ranks; the state-memory figure against hand counts and a real run.

What ``titan run`` refuses before launch and what a rank refuses when it
starts come from the same code (titan.core.checks.check_job), checked here by
running both sides on the same mistake and comparing the lines they print.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from titan.core.launch import prepare_job
from titan.core.layout import GIB, LAYOUT_ENV, Device, LaunchLayout, gpu_model
from titan.core.state_memory import state_memory

REPO = Path(__file__).resolve().parents[2]

# Published parameter counts (Meta's model cards / Hugging Face configs' safetensors totals).
LLAMA3_PARAMETERS = {"8B": 8_030_261_248, "70B": 70_553_706_496, "405B": 405_853_388_800}


def _titan(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )


def _rank(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", LAYOUT_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "titan.core.train", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **env},
    )


def _error_line(stderr: str) -> str:
    """The ``error: ...`` text of a failed command (a rank prefixes ``rank R: ``)."""
    lines = [line for line in stderr.splitlines() if "error: " in line]
    assert len(lines) == 1, stderr
    return lines[0].split("error: ", 1)[1]


def llama3_flavor(name: str):
    from titan.core.plugins import load_plugins
    from titan.core.registry import ModelRegistry

    registry = ModelRegistry()
    load_plugins().pm.hook.titan_register_models(registry=registry)
    return registry.get("llama3").flavor(name)


def _sagemaker_p5_layout(count: int) -> LaunchLayout:
    h100 = gpu_model("H100")
    assert h100 is not None
    return LaunchLayout(
        nodes=count,
        procs_per_node=8,
        device=Device.gpu(h100),
        where=f"{count} x ml.p5.48xlarge",
        nodes_option="--sagemaker.instance_count={n}",
        max_procs_per_node=8,
    )


@pytest.mark.parametrize(
    ("overrides", "layout"),
    [
        # TP above the processes: the CLI's layout is this machine with one process.
        (["--parallelism.tensor_parallel_degree=2"], None),
        # A global batch that the data-parallel ranks do not divide (2 processes).
        (
            [
                "--nproc",
                "2",
                "--training.local_batch_size=2",
                "--training.global_batch_size=6",
            ],
            None,
        ),
        # 70B on one p5: the model state does not fit 8 x 80 GB (a SageMaker layout).
        (["--model.flavor=70B"], _sagemaker_p5_layout(1)),
    ],
    ids=["tp-above-world", "global-batch", "70B-on-one-p5"],
)
def test_a_rank_and_the_cli_print_the_same_line(tmp_path, overrides, layout):
    """The same mistake, refused by ``titan run`` before launch and by a rank at its start."""
    dump = tmp_path / "out"
    args = ["--job.dump_folder", str(dump), *overrides]
    if layout is None:
        cli = _titan("run", *args)
        world = 2 if "--nproc" in overrides else 1
        env = {"WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
    else:
        # The rank gets the layout its backend checked; the CLI side checks the same layout
        # in-process (SageMaker's own layout() is tested in tests/backends/sagemaker).
        from titan.core.checks import check_job
        from titan.core.errors import ConfigError

        pairs = [tuple(a[2:].split("=", 1)) for a in overrides]
        job = prepare_job(None, overrides=[*pairs, ("job.dump_folder", str(dump))], validate=False)
        with pytest.raises(ConfigError) as refused:
            check_job(job, layout)
        cli = subprocess.CompletedProcess([], 2, "", f"error: {refused.value}")
        env = {LAYOUT_ENV: layout.to_env()}
    assert cli.returncode == 2, cli.stderr
    assert not dump.exists(), "the CLI refused but wrote into the dump folder"
    config = tmp_path / "job_config.toml"
    plain = [a for a in args if a != "--nproc" and a != "2"]
    shown = _titan("config", "show", *plain)
    assert shown.returncode == 0, shown.stderr
    config.write_text(shown.stdout)
    rank = _rank(config, env)
    assert rank.returncode == 2, rank.stderr
    assert _error_line(rank.stderr) == _error_line(cli.stderr)


# --- the state-memory figure -------------------------------------------------


@pytest.mark.parametrize("flavor", ["8B", "70B", "405B"])
@pytest.mark.parametrize("gpus", [8, 32, 128])
def test_state_memory_of_llama3_on_h100s_matches_a_hand_count(flavor, gpus):
    """float32 weights (4 bytes) + float32 gradients (4) + AdamW's two float32 moments (8),
    split over every GPU by FSDP: 16 x parameters / GPUs bytes per GPU."""
    from titan.models.llama.args import parameter_count

    n = parameter_count(llama3_flavor(flavor))
    assert n == LLAMA3_PARAMETERS[flavor]  # titan's count is Meta's
    hand = (4 + 4 + 2 * 4) * LLAMA3_PARAMETERS[flavor] / gpus
    figure = state_memory(n, gpus).total
    assert abs(figure - hand) <= 16  # ceil(n / gpus) rounding: under one parameter's bytes


@pytest.mark.parametrize(
    ("flavor", "gpus", "fits"),
    [
        ("8B", 8, True),  # 15.0 GiB of 79.6
        ("70B", 8, False),  # 131.4 GiB: the row of issue 22
        ("70B", 32, True),  # 32.9 GiB
        ("405B", 32, False),  # 189.0 GiB
        ("405B", 128, True),  # 47.2 GiB
    ],
)
def test_fit_decision_on_p5(tmp_path, flavor, gpus, fits):
    from titan.core.checks import check_job
    from titan.core.errors import ConfigError

    job = prepare_job(
        None,
        overrides=[
            ("model.flavor", flavor),
            ("job.dump_folder", str(tmp_path / "out")),
            ("training.local_batch_size", "1"),  # the state decides, not the activations
        ],
        validate=False,
    )
    layout = _sagemaker_p5_layout(gpus // 8)
    if fits:
        check_job(job, layout)
        return
    with pytest.raises(ConfigError) as refused:
        check_job(job, layout)
    message = str(refused.value)
    assert message.startswith("model state does not fit")
    # The smallest change that fits: enough instances for 16 bytes per parameter.
    need = -(-16 * LLAMA3_PARAMETERS[flavor] // int(79.6 * GIB))
    assert f"--sagemaker.instance_count={-(-need // 8)}" in message


_MEASURE = r"""
import json, sys
from titan.core.launch import prepare_job
from titan.core.trainer import Trainer
from torch.distributed._tools.mem_tracker import MemTracker

job = prepare_job(None, overrides=[
    ("model.flavor", "debug"), ("training.seq_len", "64"), ("training.local_batch_size", "2"),
    ("job.dump_folder", sys.argv[1]),
])
trainer = Trainer(job)
data = iter(trainer.dataloader)
trainer.train_step([next(data)])  # the optimizer state exists from here on
tracker = MemTracker()
tracker.track_external(trainer.model, trainer.optimizer)
snapshots = []
optimizer_step = trainer.optimizer.step


def step_after_snapshot(*args, **kwargs):
    # Gradients and the optimizer state (from the first step) are both alive here.
    snapshots.append(tracker.get_tracker_snapshot("current"))
    return optimizer_step(*args, **kwargs)


trainer.optimizer.step = step_after_snapshot
with tracker:
    trainer.train_step([next(data)])
by_kind = {}
for per_device in snapshots[0].values():
    for kind, n in per_device.items():
        by_kind[str(kind)] = by_kind.get(str(kind), 0) + n
n_params = sum(p.numel() for p in trainer.model.parameters())
print("RESULT " + json.dumps({"by_kind": by_kind, "parameters": n_params}))
"""


def test_state_memory_matches_a_cpu_runs_tracked_memory(tmp_path):
    """torch's MemTracker over a real training step: parameters + gradients + optimizer state."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    kinds = result["by_kind"]
    measured = sum(v for k, v in kinds.items() if k.rsplit(".", 1)[-1] in ("PARAM", "GRAD", "OPT"))
    figure = state_memory(result["parameters"], 1).total
    assert abs(measured - figure) / figure < 0.05, (measured, figure, kinds)
