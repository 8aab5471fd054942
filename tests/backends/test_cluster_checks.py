"""Cluster jobs are checked before they are queued or paid for (issue 22).

Every row is a mistake a user makes on a cluster, run as ``titan run
--backend slurm|sagemaker --dry-run`` in this process (the console script's
entry point), offline and with a loopback-only network. Each must exit 2 with
one ``error:`` line naming the problem and the fix, no traceback, and nothing
written: the workspace is unchanged afterwards. The valid commands next to
them print their sbatch script or CreateTrainingJob request and exit 0.

The first rows are the table of issue 22 as a user typed it on main before
the launch layout existed, when each printed a script or a request.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from titan.core.testing import folder_snapshot, titan_in_process

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "sagemaker"))
from sm_helpers import ROLE, aws_env, loopback_only  # noqa: E402

SLURM = ("run", "--backend", "slurm", "--dry-run")
SAGEMAKER = ("run", "--backend", "sagemaker", "--dry-run", f"--sagemaker.role={ROLE}")


@dataclass(frozen=True)
class Mistake:
    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]


def slurm(*args: str) -> tuple[str, ...]:
    return (*SLURM, *args)


def sagemaker(*args: str) -> tuple[str, ...]:
    return (*SAGEMAKER, *args)


MISTAKES = [
    # --- the table of issue 22 -----------------------------------------------------------
    Mistake(
        "slurm-tp8-on-4-gpus",
        slurm(
            "--slurm.nodes=1",
            "--slurm.gpus_per_node=4",
            "--plugins",
            "tp",
            "--parallelism.tensor_parallel_degree=8",
        ),
        ("tensor_parallel_degree 8", "4 process", "--slurm.gpus_per_node=8"),
    ),
    Mistake(
        "slurm-dp-shard-3-of-8",
        slurm("--slurm.gpus_per_node=8", "--parallelism.data_parallel_shard_degree=3"),
        ("dp_shard 3", "8 processes", "data_parallel_shard_degree = -1"),
    ),
    Mistake(
        "sm-40-ranks-on-32-gpus",
        sagemaker(
            "--sagemaker.instance_count=4",
            "--plugins",
            "tp",
            "--parallelism.tensor_parallel_degree=8",
            "--parallelism.data_parallel_shard_degree=5",
        ),
        ("= 40", "32 processes", "--sagemaker.instance_count=5"),
    ),
    Mistake(
        "sm-fp8-on-a100",
        sagemaker("--sagemaker.instance_type=ml.p4d.24xlarge", "--plugins", "fp8"),
        ("float8", "A100", "--fp8.emulate=true"),
    ),
    Mistake(
        "sm-70B-on-one-p5",
        sagemaker("--model.flavor=70B"),
        ("does not fit", "70.55B", "131.4 GiB", "--sagemaker.instance_count=2"),
    ),
    # --- more cluster mistakes -------------------------------------------------------------
    Mistake(
        "sm-70B-peak-without-ac-on-two-p5",
        sagemaker("--sagemaker.instance_count=2", "--model.flavor=70B"),
        ("the step's peak does not fit", "backward", "--plugins ac --ac.mode=selective"),
    ),
    Mistake(
        "slurm-8B-peak-at-seq-8192-batch-8",
        slurm("--slurm.gpu_type=h100", "--model.flavor=8B", "--training.seq_len=8192"),
        ("the step's peak does not fit", "loss backward", "--training.local_batch_size=1"),
    ),
    Mistake(
        "sm-instance-count-0",
        sagemaker("--sagemaker.instance_count=0"),
        ("instance_count",),
    ),
    Mistake(
        "sm-unknown-instance-type",
        sagemaker("--sagemaker.instance_type=ml.p9.96xlarge"),
        ("ml.p9.96xlarge", "gpus_per_instance", "gpu_model"),
    ),
    Mistake(
        "sm-trainium",
        sagemaker("--sagemaker.instance_type=ml.trn1.32xlarge"),
        ("ml.trn1.32xlarge", "Trainium"),
    ),
    Mistake(
        "sm-cpu-instance",
        sagemaker("--sagemaker.instance_type=ml.m5.24xlarge"),
        ("ml.m5.24xlarge",),
    ),
    Mistake(
        "sm-tp-above-gpus-per-node",
        sagemaker(
            "--sagemaker.instance_count=2",
            "--plugins",
            "tp",
            "--parallelism.tensor_parallel_degree=16",
        ),
        ("tensor_parallel_degree 16", "8 processes per node"),
    ),
    Mistake(
        "sm-fp8-on-t4",
        sagemaker("--sagemaker.instance_type=ml.g4dn.12xlarge", "--plugins", "fp8"),
        ("float8", "T4"),
    ),
    Mistake(
        "sm-405B-on-4-p5",
        sagemaker("--sagemaker.instance_count=4", "--model.flavor=405B"),
        ("does not fit", "405.85B", "--sagemaker.instance_count="),
    ),
    Mistake(
        "sm-8B-on-one-a10g",
        sagemaker("--sagemaker.instance_type=ml.g5.2xlarge", "--model.flavor=8B"),
        ("does not fit", "8.03B", "A10G"),
    ),
    Mistake(
        "sm-spot-wait-below-runtime",
        sagemaker(
            "--sagemaker.spot=true",
            "--sagemaker.max_runtime_s=7200",
            "--sagemaker.max_wait_s=3600",
        ),
        ("max_wait_s", "max_runtime_s", "--sagemaker.max_wait_s=14400"),
    ),
    Mistake(
        "sm-processes-above-gpus",
        sagemaker("--sagemaker.processes_per_host=16"),
        ("processes_per_host", "16", "--sagemaker.processes_per_host=8"),
    ),
    Mistake(
        "sm-fp8-ag-without-sharding",
        sagemaker(
            "--plugins",
            "fp8,fp8-ag",
            "--parallelism.data_parallel_replicate_degree=8",
        ),
        ("fp8-ag", "data_parallel_shard_degree 1"),
    ),
    Mistake(
        "sm-global-batch",
        sagemaker("--training.global_batch_size=100"),
        ("global_batch_size 100", "= 64"),
    ),
    Mistake(
        "sm-replicate-not-dividing",
        sagemaker("--parallelism.data_parallel_replicate_degree=3"),
        ("not divisible", "data_parallel_replicate_degree 3"),
    ),
    Mistake(
        "sm-70B-replicated-over-2-p5",
        sagemaker(
            "--sagemaker.instance_count=2",
            "--model.flavor=70B",
            "--parallelism.data_parallel_replicate_degree=2",
        ),
        ("does not fit", "data_parallel_replicate_degree=1"),
    ),
    Mistake(
        "sm-tp-not-dividing-kv-heads",
        sagemaker(
            "--sagemaker.instance_type=ml.p4de.24xlarge",
            "--model.flavor=8B",
            "--plugins",
            "tp",
            "--parallelism.tensor_parallel_degree=16",
        ),
        ("tensor_parallel_degree 16",),
    ),
    Mistake(
        "slurm-tp-across-nodes",
        slurm(
            "--slurm.nodes=2",
            "--slurm.gpus_per_node=4",
            "--plugins",
            "tp",
            "--parallelism.tensor_parallel_degree=8",
        ),
        ("tensor_parallel_degree 8", "4 processes per node"),
    ),
    Mistake(
        "slurm-fp8-on-a100",
        slurm("--slurm.gpu_type=a100", "--plugins", "fp8"),
        ("float8", "A100"),
    ),
    Mistake(
        "slurm-fp8-on-v100",
        slurm("--slurm.gpu_type=v100", "--plugins", "fp8,fp8-ag"),
        ("float8", "V100"),
    ),
    Mistake(
        "slurm-70B-on-one-h100-node",
        slurm("--slurm.gpu_type=h100", "--model.flavor=70B"),
        ("does not fit", "70.55B", "--slurm.nodes=2"),
    ),
    Mistake(
        "slurm-405B-on-4-h100-nodes",
        slurm("--slurm.gpu_type=h100", "--slurm.nodes=4", "--model.flavor=405B"),
        ("does not fit", "405.85B", "--slurm.nodes="),
    ),
    Mistake(
        "slurm-fp8-ag-replicated",
        slurm("--plugins", "fp8,fp8-ag", "--parallelism.data_parallel_replicate_degree=8"),
        ("fp8-ag", "data_parallel_shard_degree 1"),
    ),
    Mistake(
        "slurm-global-batch",
        slurm("--slurm.gpus_per_node=8", "--training.global_batch_size=12"),
        ("global_batch_size 12", "= 64"),
    ),
    Mistake(
        "slurm-nproc-above-gpus",
        slurm("--slurm.gpus_per_node=8", "--nproc", "16"),
        ("--nproc 16", "gpus_per_node"),
    ),
    Mistake(
        "slurm-time-before-signal",
        slurm("--slurm.time=00:01:00", "--slurm.signal_delay=120"),
        ("slurm.time", "signal_delay"),
    ),
    Mistake(
        "slurm-unknown-time-format",
        slurm("--slurm.time=twenty minutes"),
        ("slurm.time", "HH:MM:SS"),
    ),
    Mistake(
        "slurm-tp-dividing-nothing",
        slurm("--plugins", "tp", "--parallelism.tensor_parallel_degree=3"),
        ("not divisible", "tensor_parallel_degree 3"),
    ),
]


VALID = [
    ("slurm-time-as-slurm-writes-it", slurm("--slurm.time=00:20:00"), "#SBATCH"),
    ("slurm-8-h100", slurm("--slurm.gpu_type=h100", "--model.flavor=8B"), "#SBATCH"),
    (
        "slurm-70B-on-two-h100-nodes",
        slurm(
            "--slurm.gpu_type=h100",
            "--slurm.nodes=2",
            "--model.flavor=70B",
            "--training.local_batch_size=1",
        ),
        "#SBATCH",
    ),
    (
        "sm-8B-on-one-p5",
        sagemaker("--model.flavor=8B", "--plugins", "fp8,fp8-ag"),
        "TrainingJobName",
    ),
    (
        "sm-fp8-emulated-on-a100",
        sagemaker(
            "--sagemaker.instance_type=ml.p4d.24xlarge", "--plugins", "fp8", "--fp8.emulate=true"
        ),
        "TrainingJobName",
    ),
    (
        "sm-70B-on-two-p5",
        sagemaker(
            "--sagemaker.instance_count=2",
            "--model.flavor=70B",
            "--plugins",
            "ac",
            "--ac.mode=selective",
            "--ac.selective_ac_option=op",
        ),
        "TrainingJobName",
    ),
]


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory):
    """A loopback-only network, AWS settings of no real account, and a workspace to watch."""
    home = tmp_path_factory.mktemp("cluster_checks")
    env = aws_env(None, home)
    # uv's own cache stays where it was (the SageMaker layout runs `uv export`): the
    # workspace watched for writes is titan's, not uv's.
    env["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")
    with pytest.MonkeyPatch.context() as mp, loopback_only():
        for key in [k for k in os.environ if k.startswith(("AWS_", "SAGEMAKER_"))]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(home)
        yield home


@pytest.mark.parametrize("case", MISTAKES, ids=[m.id for m in MISTAKES])
def test_a_cluster_mistake_is_one_line_before_anything_is_written(offline: Path, case: Mistake):
    before = folder_snapshot(offline)
    code, stdout, stderr = titan_in_process(*case.argv, f"--job.dump_folder={offline / 'run'}")
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 2, f"exit {code}\n{stderr}\n{stdout}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not stdout.strip(), stdout
    assert folder_snapshot(offline) == before  # nothing written, nothing left behind


@pytest.mark.parametrize(("id", "argv", "marker"), VALID, ids=[v[0] for v in VALID])
def test_a_valid_cluster_job_prints_its_script_or_request(offline: Path, id, argv, marker):
    code, stdout, stderr = titan_in_process(*argv, f"--job.dump_folder={offline / 'run'}")
    assert code == 0, stderr
    assert marker in stdout, stdout
    assert "error:" not in stderr
