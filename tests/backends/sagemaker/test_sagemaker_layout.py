"""The SageMaker launch layout: instances x processes and their GPU, from the instance table.

Expected GPU counts, models and memory are the published AWS instance specifications
(aws.amazon.com/ec2/instance-types/{p5,p4,g5}/), written here rather than read back
from titan's table. No AWS call and no SDK: ``layout()`` must stay light.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from titan.backends.sagemaker import SageMakerBackend
from titan.core.errors import ConfigError
from titan.core.launch import prepare_job
from titan.core.layout import GIB, LAYOUT_ENV, LaunchLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import ROLE, aws_env, loopback_only, titan  # noqa: E402


def job_for(**sagemaker: object):
    """A job with a valid role and region (layout() checks the whole [sagemaker] section)."""
    sagemaker = {"role": ROLE, "region": "us-west-2", **sagemaker}
    overrides = [(f"sagemaker.{k}", str(v)) for k, v in sagemaker.items()]
    return prepare_job(None, overrides=overrides, validate=False)


def layout_for(**sagemaker: object) -> LaunchLayout:
    return SageMakerBackend().layout(job_for(**sagemaker), offline=True)


def refusal(**sagemaker: object) -> str:
    with pytest.raises(ConfigError) as err:
        layout_for(**sagemaker)
    message = str(err.value)
    assert "\n" not in message
    return message


def gib(published_gb: int) -> tuple[int, int]:
    """Bounds of what the driver reports for a GPU sold as ``published_gb`` GB."""
    return int(published_gb * 0.92 * GIB), published_gb * GIB


def test_p5_is_eight_h100_80gb_with_float8():
    layout = layout_for(instance_type="ml.p5.48xlarge")
    assert (layout.nodes, layout.procs_per_node, layout.max_procs_per_node) == (1, 8, 8)
    assert layout.device.kind == "cuda"
    assert "H100" in layout.device.model
    low, high = gib(80)
    assert low <= layout.device.memory_bytes <= high
    assert layout.device.float8 is True
    assert layout.where == "1 x ml.p5.48xlarge"


def test_p4d_is_eight_a100_40gb_without_float8():
    layout = layout_for(instance_type="ml.p4d.24xlarge")
    assert layout.procs_per_node == 8
    assert "A100" in layout.device.model
    low, high = gib(40)
    assert low <= layout.device.memory_bytes <= high
    assert layout.device.float8 is False


def test_p4de_and_h200_and_b200_types():
    p4de = layout_for(instance_type="ml.p4de.24xlarge")
    assert "A100" in p4de.device.model and p4de.device.memory_bytes > 70 * GIB
    for name in ("ml.p5e.48xlarge", "ml.p5en.48xlarge"):
        h200 = layout_for(instance_type=name)
        assert h200.procs_per_node == 8 and "H200" in h200.device.model
        assert h200.device.memory_bytes > 130 * GIB and h200.device.float8 is True
    b200 = layout_for(instance_type="ml.p6-b200.48xlarge")
    assert b200.procs_per_node == 8 and "B200" in b200.device.model


@pytest.mark.parametrize(
    ("instance_type", "gpus", "model", "published_gb"),
    [
        ("ml.g5.xlarge", 1, "A10G", 24),
        ("ml.g5.12xlarge", 4, "A10G", 24),
        ("ml.g5.24xlarge", 4, "A10G", 24),
        ("ml.g5.48xlarge", 8, "A10G", 24),
        ("ml.g6.12xlarge", 4, "L4", 24),
        ("ml.g6e.48xlarge", 8, "L40S", 48),
        ("ml.g4dn.12xlarge", 4, "T4", 16),
        ("ml.p3.2xlarge", 1, "V100", 16),
        ("ml.p3.8xlarge", 4, "V100", 16),
        ("ml.p3.16xlarge", 8, "V100", 16),
        ("ml.p3dn.24xlarge", 8, "V100", 32),
    ],
)
def test_g_and_p3_types_have_their_published_gpus(instance_type, gpus, model, published_gb):
    layout = layout_for(instance_type=instance_type)
    assert layout.procs_per_node == gpus and layout.max_procs_per_node == gpus
    assert model in layout.device.model
    low, high = gib(published_gb)
    assert low <= layout.device.memory_bytes <= high


def test_four_p5_instances_are_a_world_of_32_and_the_hints_name_sagemaker_keys():
    layout = layout_for(instance_type="ml.p5.48xlarge", instance_count=4)
    assert (layout.nodes, layout.world_size) == (4, 32)
    assert layout.where == "4 x ml.p5.48xlarge"
    assert layout.more_processes(64) == "--sagemaker.instance_count=8"
    fewer = layout_for(instance_type="ml.p5.48xlarge", instance_count=4, processes_per_host=4)
    assert fewer.world_size == 16
    assert fewer.more_processes(32) == "--sagemaker.processes_per_host=8"


def test_g5_12xlarge_with_two_processes_per_host():
    layout = layout_for(instance_type="ml.g5.12xlarge", processes_per_host=2)
    assert (layout.procs_per_node, layout.max_procs_per_node) == (2, 4)


@pytest.mark.parametrize("name", ["ml.trn1.32xlarge", "ml.trn1n.32xlarge", "ml.trn2.48xlarge"])
def test_trainium_is_refused(name):
    message = refusal(instance_type=name)
    assert name in message and "Trainium" in message and "CUDA" in message
    assert "ml.p5.48xlarge" in message


@pytest.mark.parametrize("name", ["ml.m5.xlarge", "ml.c5.2xlarge", "ml.c7i-flex.xlarge"])
def test_cpu_only_types_are_refused(name):
    message = refusal(instance_type=name)
    assert name in message and "no GPU" in message and "ml.p5.48xlarge" in message


def test_an_unknown_type_is_refused_naming_the_override_keys():
    message = refusal(instance_type="ml.p9.48xlarge")
    assert "ml.p9.48xlarge" in message
    assert "--sagemaker.gpus_per_instance=" in message and "--sagemaker.gpu_model=" in message
    # One override alone is not enough for a type titan does not know.
    assert "gpu_model" in refusal(instance_type="ml.p9.48xlarge", gpus_per_instance=8)


def test_the_overrides_make_an_unknown_type_work():
    layout = layout_for(instance_type="ml.p9.48xlarge", gpus_per_instance=8, gpu_model="H200")
    assert (layout.procs_per_node, layout.max_procs_per_node) == (8, 8)
    assert "H200" in layout.device.model and layout.device.float8 is True
    assert layout.where == "1 x ml.p9.48xlarge"


def test_an_override_on_a_known_type_wins():
    layout = layout_for(instance_type="ml.p4d.24xlarge", gpu_model="A100 80GB")
    assert layout.procs_per_node == 8 and layout.device.memory_bytes > 70 * GIB
    assert layout_for(instance_type="ml.p5.48xlarge", gpus_per_instance=4).procs_per_node == 4


def test_an_unknown_gpu_model_is_refused_with_the_known_ones():
    message = refusal(instance_type="ml.p9.48xlarge", gpus_per_instance=8, gpu_model="Z9000")
    assert "Z9000" in message and "H100" in message and "A100" in message


@pytest.mark.parametrize("count", [0, -1])
def test_instance_count_below_one_is_refused(count):
    message = refusal(instance_count=count)
    assert f"sagemaker.instance_count is {count}" in message
    assert "--sagemaker.instance_count=1" in message


def test_more_processes_per_host_than_gpus_is_refused():
    message = refusal(instance_type="ml.p5.48xlarge", processes_per_host=9)
    assert "processes_per_host is 9" in message and "8 GPU(s)" in message
    assert "--sagemaker.processes_per_host=8" in message
    assert "4 GPU(s)" in refusal(instance_type="ml.g5.12xlarge", processes_per_host=8)
    assert "positive" in refusal(processes_per_host=-1)


def test_async_checkpoints_on_several_instances_are_refused_by_the_layout():
    job = job_for(instance_count=2)
    job.config.checkpoint.async_mode = "async"
    with pytest.raises(ConfigError, match="--checkpoint.async_mode=disabled"):
        SageMakerBackend().layout(job, offline=False)


def test_the_request_environment_carries_the_checked_layout():
    from titan.backends.sagemaker.request import plan

    job = job_for(instance_type="ml.p5.48xlarge", instance_count=4, role=ROLE, region="us-east-1")
    unchecked = plan(job, image_lookup=False)
    assert LAYOUT_ENV not in unchecked.environment
    assert unchecked.processes_per_host == 8
    assert unchecked.environment["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"  # p5 has EFA
    job.layout = SageMakerBackend().layout(job, offline=True)
    checked = plan(job, image_lookup=False)
    handed = LaunchLayout.from_env(checked.environment[LAYOUT_ENV])
    assert job.layout.notes and not job.layout.dump_folder_here
    # The notes (said before launch) make the value too long for SageMaker: dropped.
    assert handed == dataclasses.replace(job.layout, notes=())
    assert len(checked.environment[LAYOUT_ENV]) <= 512  # SageMaker's limit on a value
    g5 = job_for(instance_type="ml.g5.12xlarge", role=ROLE, region="us-east-1")
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in plan(g5, image_lookup=False).environment


def test_layout_imports_neither_the_sdk_nor_torch(tmp_path):
    """Offline (dry runs, `titan plan`) the layout is light; a real launch's resolves and
    checks the AWS credentials with boto3 (never the SDK), here with no network to reach."""
    probe = (
        "import sys\n"
        "from titan.core.launch import prepare_job\n"
        "from titan.backends.sagemaker import SageMakerBackend\n"
        f"job = prepare_job(None, overrides=[('sagemaker.instance_count', '2'), "
        f"('sagemaker.role', '{ROLE}'), ('sagemaker.region', 'us-west-2'), "
        f"('job.dump_folder', '{tmp_path / 'run'}')], validate=False)\n"
        "layout = SageMakerBackend().layout(job, offline=sys.argv[1] == 'offline')\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sagemaker', 'boto3', 'torch'})\n"
        "print(layout.world_size, heavy or 'LIGHT')\n"
    )
    with loopback_only():  # STS is out of reach: the online check goes on without it
        found = {
            mode: subprocess.run(
                [sys.executable, "-c", probe, mode],
                capture_output=True,
                text=True,
                env=aws_env(None, tmp_path),
                timeout=120,
            )
            for mode in ("offline", "online")
        }
    assert found["offline"].stdout.split() == ["16", "LIGHT"], str(found["offline"])
    assert found["online"].stdout.split() == ["16", "['boto3']"], str(found["online"])


def _dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = aws_env(None, tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    with loopback_only():
        return titan(
            "run",
            "--backend",
            "sagemaker",
            "--dry-run",
            f"--sagemaker.role={ROLE}",
            "--sagemaker.input=s3://titan-data/c4/en/",
            f"--job.dump_folder={tmp_path / 'run'}",
            *args,
            env=env,
        )


def test_dry_run_request_carries_the_layout(tmp_path):
    proc = _dry_run(tmp_path, "--sagemaker.instance_count=2")
    assert proc.returncode == 0, proc.stderr
    request = json.loads(proc.stdout[proc.stdout.index("{") :])
    layout = LaunchLayout.from_env(request["Environment"][LAYOUT_ENV])
    assert (layout.nodes, layout.procs_per_node, layout.where) == (2, 8, "2 x ml.p5.48xlarge")
    assert "H100" in layout.device.model
