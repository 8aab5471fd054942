"""The launch layout on the real two-node test cluster (see conftest.py).

The cluster's nodes declare 8 CPUs, half this machine's memory and two GPUs
as generic resources (``Gres=gpu:h100:2``, scripts/slurm-cluster). The layout
must read them from Slurm itself, and ``titan run --backend slurm`` must
refuse what the partition cannot run with one line, exit 2, before sbatch
runs: nothing queued, nothing in accounting, nothing written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import job_with, jobs_named, node_fields, sbatch_spy, titan_run  # noqa: E402

from titan.backends.slurm import SlurmBackend
from titan.backends.slurm.cluster import parse_gres
from titan.core.layout import Device, gpu_model

MIB = 1024**2


def test_the_layout_reads_nodes_memory_and_gpus_from_slurm(slurm_cluster):
    node1 = node_fields("node1")
    (gpu_type, gpus), *_ = parse_gres(node1["Gres"]).items()  # from Slurm: gpu:h100:2
    assert (gpu_type, gpus) == ("h100", 2)

    cpu = SlurmBackend().layout(job_with("--slurm.gpus_per_node=0", "--slurm.nodes=2"), False)
    assert cpu.notes == ()
    assert (cpu.nodes, cpu.procs_per_node) == (2, 1)
    assert cpu.where == "Slurm: 2 node(s) x 1 CPU rank(s), partition 'debug'"
    assert cpu.device.kind == "cpu"
    assert cpu.device.memory_bytes == int(node1["RealMemory"]) * MIB > 1 * MIB
    assert cpu.max_procs_per_node == int(node1["CPUTot"])

    gpu = SlurmBackend().layout(job_with(f"--slurm.gpus_per_node={gpus}"), False)
    assert gpu.notes == ()
    assert gpu.device == Device.gpu(gpu_model(gpu_type))
    assert gpu.device.float8 is True and gpu.device.memory_bytes > 79 * 1024 * MIB
    assert gpu.max_procs_per_node == gpus
    assert gpu.more_processes(2 * gpus) == "--slurm.nodes=2"  # the nodes take no more GPUs


def test_a_controller_that_does_not_answer_is_one_note(slurm_cluster, tmp_path, monkeypatch):
    """A slurm.conf whose controller port nobody listens on: sinfo retries past the timeout."""
    conf = (slurm_cluster / "slurm.conf").read_text().splitlines()
    port = [f"SlurmctldPort={65000}" if x.startswith("SlurmctldPort=") else x for x in conf]
    (tmp_path / "slurm.conf").write_text("\n".join(port) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    lay = SlurmBackend().layout(job_with("--slurm.gpus_per_node=0", "--slurm.nodes=3"), False)
    assert lay.nodes == 3  # not checked against the partition: it could not be asked
    assert len(lay.notes) == 1 and "could not ask Slurm" in lay.notes[0]


@pytest.mark.parametrize(
    ("name", "args", "needles"),
    [
        (
            "nodes",
            ["--slurm.gpus_per_node=0", "--slurm.nodes=3"],
            ("slurm.nodes asks for 3 node(s)", "partition 'debug' has 2", "--slurm.nodes=2"),
        ),
        (
            "gpus",
            ["--slurm.gpus_per_node=4", "--slurm.nodes=1"],
            ("slurm.gpus_per_node is 4", "at most 2 GPU(s)", "--slurm.gpus_per_node=2"),
        ),
        (
            "gpu-type",
            ["--slurm.gpus_per_node=2", "--slurm.gpu_type=a100"],
            ("slurm.gpu_type 'a100'", "its nodes have: h100", "--slurm.gpu_type=h100"),
        ),
        (
            "partition",
            ["--slurm.gpus_per_node=0", "--slurm.partition=nope"],
            ("slurm.partition 'nope' is not a partition", "debug"),
        ),
    ],
)
def test_what_the_partition_cannot_run_is_refused_before_sbatch(
    slurm_cluster, tmp_path: Path, name, args, needles
):
    env, sbatch_calls = sbatch_spy(tmp_path / "bin")
    dump = tmp_path / "run"
    proc = titan_run(f"refused-{name}", dump, *args, "--training.steps=1", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not sbatch_calls.exists()  # sbatch never ran
    assert jobs_named(f"titan-test-refused-{name}") == []  # nothing queued, nor in accounting
    assert not dump.exists()  # nothing written


def test_a_job_the_partition_can_run_passes_the_spy(slurm_cluster, tmp_path: Path):
    """The spy itself works: a job the partition can run reaches sbatch (then is cancelled)."""
    env, sbatch_calls = sbatch_spy(tmp_path / "bin")
    proc = titan_run(
        "layout-ok",
        tmp_path / "run",
        "--training.steps=1",
        "--slurm.sbatch=hold",  # held: it never starts, so it takes no CPU from the other tests
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert sbatch_calls.read_text().count("\n") == 1
    ids = jobs_named("titan-test-layout-ok")
    subprocess.run(["scancel", *ids], check=True)
    assert ids
