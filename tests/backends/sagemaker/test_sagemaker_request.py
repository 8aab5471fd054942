"""`titan run --backend sagemaker` against moto, and `--dry-run` with no network at all.

The job is created by the SageMaker SDK's own ModelTrainer through moto's API;
the request is read back from moto (DescribeTrainingJob, ListTags) and from S3,
field by field.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

import pytest

from titan.core.layout import LAYOUT_ENV, LaunchLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import imported_by  # noqa: E402
from sm_helpers import (  # noqa: E402
    BUCKET,
    DATA_BUCKET,
    REGION,
    ROLE,
    assert_no_secret,
    aws_env,
    client,
    describe_json,
    lock_packages,
    loopback_only,
    s3_objects,
    titan,
)

IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.10-gpu-py313"
HEADLINE = [
    "run",
    "--backend",
    "sagemaker",
    "--sagemaker.instance_count",
    "4",
    "--plugins",
    "compile,fp8,fp8-ag",
    "--sagemaker.role",
    ROLE,
    "--sagemaker.input",
    f"s3://{DATA_BUCKET}/c4/en/",
]
TOKENIZER = (
    Path(__file__).resolve().parents[3]
    / "packages/core/src/titan/core/assets/tokenizers/tinyshakespeare_bpe.json"
)
EXTRA = [
    f"--model.tokenizer_path={TOKENIZER}",
    "--sagemaker.spot=true",
    "--sagemaker.max_runtime_s=7200",
    '--sagemaker.subnets=["subnet-0a1b2c"]',
    '--sagemaker.security_group_ids=["sg-0d4e5f"]',
    '--sagemaker.tags=["team=llm","project=titan"]',
]


@pytest.fixture(scope="module")
def buckets(moto_url: str) -> None:
    s3 = client("s3", moto_url)
    for b in (BUCKET, DATA_BUCKET):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": REGION})


@pytest.fixture(scope="module")
def created(moto_url: str, buckets: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The headline command, with spot, VPC and tags, run once against moto."""
    home = tmp_path_factory.mktemp("home")
    dump = home / "run"
    proc = titan(*HEADLINE, *EXTRA, f"--job.dump_folder={dump}", env=aws_env(moto_url, home))
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    sm = client("sagemaker", moto_url)
    desc = sm.describe_training_job(TrainingJobName=name)
    return {"proc": proc, "name": name, "desc": desc, "dump": dump, "home": home}


def _channels(desc: dict) -> dict[str, str]:
    return {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in desc["InputDataConfig"]
    }


def test_the_headline_command_creates_a_p5_job_with_data_checkpoints_tensorboard(created, moto_url):
    desc = created["desc"]
    assert desc["ResourceConfig"]["InstanceType"] == "ml.p5.48xlarge"
    assert desc["ResourceConfig"]["InstanceCount"] == 4
    assert desc["ResourceConfig"]["VolumeSizeInGB"] == 500
    assert desc["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert desc["RoleArn"] == ROLE
    assert desc["HyperParameters"] == {}  # the config travels as a file, not as strings
    channels = _channels(desc)
    assert channels["train"] == f"s3://{DATA_BUCKET}/c4/en/"
    assert set(channels) == {"train", "code", "sm_drivers"}
    assert desc["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/titan-llama3-debug/{created['name']}/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert desc["TensorBoardOutputConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/titan/tensorboard/",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    assert desc["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/titan/"
    # Spot, with max wait >= max runtime (default: twice).
    assert desc["EnableManagedSpotTraining"] is True
    assert desc["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 7200,
        "MaxWaitTimeInSeconds": 14400,
    }
    assert desc["VpcConfig"] == {"Subnets": ["subnet-0a1b2c"], "SecurityGroupIds": ["sg-0d4e5f"]}
    tags = client("sagemaker", moto_url).list_tags(ResourceArn=desc["TrainingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "llm", "project": "titan"}
    assert desc["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]


def test_torchrun_runs_eight_processes_per_p5_and_titan_is_installed_at_start(created, moto_url):
    drivers = s3_objects(moto_url, _channels(created["desc"])["sm_drivers"])
    assert json.loads(drivers["distributed.json"])["process_count_per_node"] == 8
    assert json.loads(drivers["sourcecode.json"])["entry_script"] == "titan_sagemaker_entry.py"
    script = drivers["sm_train.sh"].decode()
    assert "distributed_drivers/torchrun_driver.py" in script
    assert "install_requirements.py requirements.txt" in script
    assert "distributed_drivers/torchrun_driver.py" in drivers


def test_code_and_effective_config_are_in_s3(created, moto_url):
    code = s3_objects(moto_url, _channels(created["desc"])["code"])
    config = tomllib.loads(code["job_config.toml"].decode())
    assert sorted(config["plugins"]["enabled"]) == ["compile", "fp8", "fp8-ag"]
    assert config["checkpoint"]["enable_checkpoint"] is True
    assert config["checkpoint"]["folder"] == "/opt/ml/checkpoints"
    assert config["metrics"]["enable_tensorboard"] is True
    assert config["metrics"]["save_tb_folder"] == "/opt/ml/output/tensorboard"
    assert config["training"]["dataset_path"] == "sm-channel:train"
    assert config["job"]["dump_folder"] == "/opt/ml/output/data"
    # The local tokenizer travels in the code channel; the container's config points at it.
    name = TOKENIZER.name
    assert config["model"]["tokenizer_path"] == f"/opt/ml/input/data/code/tokenizer/{name}"
    assert code[f"tokenizer/{name}"] == TOKENIZER.read_bytes()
    assert "titan.backends.sagemaker.container" in code["titan_sagemaker_entry.py"].decode()
    wheels = sorted(k for k in code if k.startswith("wheels/"))
    names = {w.split("/")[1].split("-")[0] for w in wheels}
    assert {"titan_core", "titan_backends", "titan_models", "titan_optims"} <= names
    # titan's wheels close the requirements, each with its hash (pip's hash-checking mode).
    lines = [ln for ln in code["requirements.txt"].decode().splitlines() if ln.startswith("./")]
    assert lines == [f"./{w} --hash=sha256:{hashlib.sha256(code[w]).hexdigest()}" for w in wheels]
    # The user's own config is where `titan run` writes it, and the request beside it.
    local = tomllib.loads((created["dump"] / "job_config.toml").read_text())
    assert local["sagemaker"]["instance_count"] == 4
    saved = json.loads((created["dump"] / "sagemaker_request.json").read_text())
    assert saved["TrainingJobName"] == created["name"]
    assert saved["ResourceConfig"] == {
        k: created["desc"]["ResourceConfig"][k] for k in saved["ResourceConfig"]
    }
    assert saved["Environment"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"  # p5: EFA/NCCL set
    # The ranks check against the layout `titan run` checked: 4 x 8 H100s.
    layout = LaunchLayout.from_env(saved["Environment"][LAYOUT_ENV])
    assert (layout.nodes, layout.procs_per_node, layout.where) == (4, 8, "4 x ml.p5.48xlarge")
    assert "H100" in layout.device.model and layout.device.float8 is True


def requirement_pins(text: str) -> dict[str, list[tuple[str, list[str]]]]:
    """name -> [(version, hashes)] of the requirement lines of a requirements.txt."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line and not line[0].isspace() and "==" in line and not line.startswith("#"):
            name, _, rest = line.partition("==")
            current = []
            out.setdefault(name.strip().lower(), []).append((rest.split()[0], current))
        elif current is not None and "--hash=sha256:" in line:
            current.append(line.split("--hash=sha256:")[1].split()[0])
    return out


def test_the_code_channel_pins_the_lock_versions_with_its_hashes(created, moto_url):
    code = s3_objects(moto_url, _channels(created["desc"])["code"])
    pins = requirement_pins(code["requirements.txt"].decode())
    lock = lock_packages()
    for name in ("torch", "torchao", "torchdata", "datasets", "pluggy", "tokenizers", "tiktoken"):
        (entry,) = lock[name]
        (pinned,) = pins[name]
        assert pinned[0] == entry["version"], name
        locked = {w["hash"].removeprefix("sha256:") for w in entry.get("wheels", [])}
        if "sdist" in entry:
            locked.add(entry["sdist"]["hash"].removeprefix("sha256:"))
        assert pinned[1] and set(pinned[1]) <= locked, name
    for name, entries in pins.items():  # every line is a version the lock holds
        assert {v for v, _ in entries} <= {p["version"] for p in lock[name]}, name
    # Not the dev group (tests, the SDK, the example plugins), not titan itself as a pin.
    for name in ("moto", "pytest", "ruff", "sagemaker", "titan-core", "titan-example-csvlog"):
        assert name not in pins, name
    assert not [k for k in code if k.startswith("wheels/titan_example")]


def test_notes_say_where_the_job_checkpoints_and_that_the_image_torch_differs(created):
    err = created["proc"].stderr
    notes = [ln for ln in err.splitlines() if ln.startswith("note:")]
    prefix = f"s3://{BUCKET}/titan-llama3-debug/<job name>/checkpoints"
    assert any(prefix in n and "starts from step 0" in n for n in notes), err
    (torch,) = lock_packages()["torch"]
    if torch["version"].split(".")[:2] != ["2", "10"]:  # the default image is PyTorch 2.10
        (note,) = [n for n in notes if "default image" in n]
        assert "torch 2.10" in note and f"torch {torch['version']}" in note
        (torchao,) = lock_packages()["torchao"]
        assert f"torchao {torchao['version']}" in note
    # The job is in a VPC (EXTRA's subnets) and installs at start: it needs the package index.
    assert any("VPC" in n and "package index" in n for n in notes), err
    # After the launch: the URI SageMaker will use.
    uri = created["desc"]["CheckpointConfig"]["S3Uri"]
    assert f"checkpoints: {uri}" in " ".join(err.split())


def test_dry_run_notes_describe_the_job_not_the_local_dump_folder(tmp_path):
    """A local folder holding a run (checkpoints, metrics) says nothing about a SageMaker job."""
    dump = tmp_path / "run"
    (dump / "checkpoint" / "step-40").mkdir(parents=True)
    (dump / "checkpoint" / "step-40" / ".metadata").write_text("x")
    (dump / "metrics.jsonl").write_text('{"step": 40, "loss": 3.0}\n')
    before = sorted(p.relative_to(dump) for p in dump.rglob("*"))
    uri = f"s3://{BUCKET}/runs/llama/checkpoints"
    with loopback_only():
        proc = titan(
            *HEADLINE,
            "--dry-run",
            f"--sagemaker.checkpoint_s3_uri={uri}",
            f"--job.dump_folder={dump}",
            env=aws_env(None, tmp_path),
        )
    assert proc.returncode == 0, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "holds checkpoints" not in err and "metrics.jsonl already" not in err
    assert f"the job checkpoints to {uri}" in err and "resumes from the newest" in err
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["CheckpointConfig"]["S3Uri"] == uri
    assert sorted(p.relative_to(dump) for p in dump.rglob("*")) == before


def test_no_secret_reaches_the_request_s3_or_the_output(created, moto_url):
    desc = created["desc"]
    assert_no_secret("DescribeTrainingJob", describe_json(moto_url, created["name"]))
    assert_no_secret("the saved request", (created["dump"] / "sagemaker_request.json").read_text())
    for channel in ("code", "sm_drivers"):
        for key, body in s3_objects(moto_url, _channels(desc)[channel]).items():
            assert_no_secret(f"s3 {channel}/{key}", body)
    assert_no_secret("titan's output", created["proc"].stdout + created["proc"].stderr)


def test_dry_run_prints_the_request_with_no_network_credentials_or_upload(
    created, moto_url, tmp_path
):
    # No moto endpoint, no credentials, no network but loopback: any AWS call would fail.
    env = aws_env(None, tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    before = s3_objects(moto_url, f"s3://{BUCKET}/")
    dump = tmp_path / "dry"
    with loopback_only():
        proc = titan(*HEADLINE, *EXTRA, "--dry-run", f"--job.dump_folder={dump}", env=env)
    assert proc.returncode == 0, proc.stderr
    request = json.loads(proc.stdout[proc.stdout.index("{") :])
    desc = created["desc"]
    for key in ("ResourceConfig", "StoppingCondition", "TensorBoardOutputConfig", "VpcConfig"):
        assert request[key] == desc[key], key
    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert request["Tags"] == [
        {"Key": "team", "Value": "llm"},
        {"Key": "project", "Value": "titan"},
    ]
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "code", "sm_drivers"}
    assert "4 host(s) x 8 processes" in proc.stderr
    assert_no_secret("the dry run's output", proc.stdout + proc.stderr)
    assert not dump.exists()  # nothing written
    assert s3_objects(moto_url, f"s3://{BUCKET}/") == before  # nothing uploaded


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            [
                "--sagemaker.spot=true",
                "--sagemaker.max_runtime_s=7200",
                "--sagemaker.max_wait_s=3600",
            ],
            "--sagemaker.max_wait_s=14400",
        ),
        (["--sagemaker.role=SageMakerRole"], "arn:aws:iam::"),
        (['--sagemaker.environment=["HF_TOKEN=x"]'], "looks like a secret"),
        (["--sagemaker.input=s3://titan-data/c4"], "must end with '/'"),
    ],
)
def test_bad_settings_are_one_line_before_anything_is_created(
    args, needle, buckets, moto_url, tmp_path
):
    before = client("sagemaker", moto_url).list_training_jobs()["TrainingJobSummaries"]
    proc = titan(
        *HEADLINE, *args, f"--job.dump_folder={tmp_path / 'run'}", env=aws_env(moto_url, tmp_path)
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("titan ")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert client("sagemaker", moto_url).list_training_jobs()["TrainingJobSummaries"] == before


def test_without_the_sdk_the_backend_says_what_to_install(tmp_path):
    hide = (
        "import sys; sys.modules['sagemaker'] = None; sys.argv = ['titan'] + sys.argv[1:]; "
        "from titan.core.cli import main; main()"
    )
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            hide,
            "run",
            "--backend",
            "sagemaker",
            "--dry-run",
            f"--sagemaker.role={ROLE}",
        ],
        capture_output=True,
        text=True,
        env=aws_env(None, tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "titan-backends[sagemaker]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_titan_help_and_plugins_list_do_not_import_the_sdk(tmp_path):
    out, modules = imported_by("plugins", "list", env=aws_env(None, tmp_path))
    assert "sagemaker" in out  # the backend is listed
    assert not modules & {"sagemaker", "boto3"}, sorted(modules & {"sagemaker", "boto3"})


def test_a_local_dataset_cannot_reach_the_job(buckets, moto_url, tmp_path: Path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "hello"}\n')
    args = [a for a in HEADLINE if a not in ("--sagemaker.input", f"s3://{DATA_BUCKET}/c4/en/")]
    proc = titan(
        *args,
        f"--training.dataset_path={data}",
        f"--job.dump_folder={tmp_path / 'r'}",
        env=aws_env(moto_url, tmp_path),
    )
    assert proc.returncode == 2
    assert "upload it to S3 and pass --sagemaker.input" in proc.stderr
