"""The SDK's own container drivers train titan on fake SageMaker hosts built from moto's request.

`titan run --backend sagemaker` creates the job in moto; fake_sagemaker.py
lays out /opt/ml per host from DescribeTrainingJob and moto's S3 and starts
the request's entrypoint (the SDK's sm_train.sh -> torchrun driver ->
torchrun -> titan's entry script) in private mount/UTS/PID namespaces, all in
a loopback-only network. Losses must equal `titan run --nproc 2` on this
machine; checkpoints, TensorBoard events and the final Hugging Face model must
be where SageMaker collects them.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_sagemaker as fake  # noqa: E402
from sm_helpers import BUCKET as SM_BUCKET  # noqa: E402
from sm_helpers import (  # noqa: E402
    DATA_BUCKET,
    EXACT_ARGS,
    REGION,
    ROLE,
    assert_no_secret,
    aws_env,
    client,
    read_losses,
    titan,
    write_corpus,
)

STEPS = 24
INTERVAL = 4
CHECKPOINTS = [f"step-{s}" for s in range(INTERVAL, STEPS + 1, INTERVAL)]
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/titan:test"  # "titan already inside"
TOKENIZER = (  # a local tokenizer file: it travels in the code channel
    Path(__file__).resolve().parents[3]
    / "packages/core/src/titan/core/assets/tokenizers/tinyshakespeare_bpe.json"
)
COMMON = [
    *EXACT_ARGS,
    f"--training.steps={STEPS}",
    f"--checkpoint.interval={INTERVAL}",
    f"--model.tokenizer_path={TOKENIZER}",
]


@pytest.fixture(scope="module")
def setup(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Buckets, the corpus in S3 and the reference run `titan run --nproc 2`."""
    s3 = client("s3", moto_url)
    for b in (SM_BUCKET, DATA_BUCKET):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": REGION})
    home = tmp_path_factory.mktemp("home")
    corpus = write_corpus(home / "corpus" / "train.jsonl")
    s3.upload_file(str(corpus), DATA_BUCKET, "corpus/train.jsonl")
    ref = home / "reference"
    proc = titan(
        "run",
        "--nproc",
        "2",
        *COMMON,
        f"--training.dataset_path={corpus.parent}",
        f"--job.dump_folder={ref}",
        env=aws_env(moto_url, home),
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr
    return {"home": home, "reference": read_losses(ref / "metrics.jsonl")}


_JOBS: dict[tuple[int, int], dict] = {}


def create_job(moto_url: str, home: Path, hosts: int, procs: int) -> dict:
    """The job `titan run --backend sagemaker` creates in moto (once per layout; spot on)."""
    if (hosts, procs) in _JOBS:
        return _JOBS[(hosts, procs)]
    proc = titan(
        "run",
        "--backend",
        "sagemaker",
        *COMMON,
        "--sagemaker.instance_type=ml.g5.12xlarge",  # 4 x A10G: fits both layouts
        f"--sagemaker.instance_count={hosts}",
        f"--sagemaker.processes_per_host={procs}",
        f"--sagemaker.role={ROLE}",
        f"--sagemaker.image_uri={IMAGE}",
        f"--sagemaker.input=s3://{DATA_BUCKET}/corpus/",
        f"--job.dump_folder={home / f'launch-{hosts}x{procs}'}",
        "--sagemaker.spot=true",
        env=aws_env(moto_url, home),
    )
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    desc = client("sagemaker", moto_url).describe_training_job(TrainingJobName=name)
    _JOBS[(hosts, procs)] = desc
    return desc


@pytest.mark.parametrize(("hosts", "procs"), [(1, 2), (2, 1)], ids=["1host-x2", "2hosts-x1"])
def test_sdk_drivers_train_titan_like_a_local_two_process_run(
    hosts, procs, setup, moto_url, tmp_path
):
    desc = create_job(moto_url, setup["home"], hosts, procs)
    assert desc["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    ran = fake.run_job(desc, moto_url, tmp_path)
    algo1 = ran[0].tree
    log = ran[0].output()
    # The SDK's drivers ran torchrun with the host layout SageMaker gives.
    assert f"--nnodes={hosts}" in log and f"--nproc_per_node={procs}" in log
    if hosts > 1:
        assert "--master_addr=algo-1" in log and "--node_rank=0" in log
        assert "--node_rank=1" in ran[1].output()
    assert read_losses(algo1 / "output" / "data" / "metrics.jsonl") == setup["reference"]
    # Checkpoints where SageMaker syncs them to S3; TensorBoard events where it uploads them.
    # Every host publishes its own shards (SageMaker merges the hosts' folders in S3).
    shards = set()
    for host in ran:
        names = {p.name for p in (host.tree / "checkpoints").iterdir()}
        assert names == set(CHECKPOINTS)
        shards |= {p.name for p in (host.tree / "checkpoints" / CHECKPOINTS[-1]).iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp"} <= shards
    assert list((algo1 / "output" / "tensorboard").glob("events.out.tfevents.*"))
    # The final model, as Hugging Face loads it, where SageMaker packs model.tar.gz.
    model = algo1 / "model"
    assert json.loads((model / "config.json").read_text())["model_type"] == "llama"
    assert list(model.glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(str(next(model.glob("*.safetensors"))), "pt") as f:
        key = next(iter(f.keys()))
        assert str(f.get_tensor(key).dtype) == "torch.bfloat16"
    for path in [*algo1.rglob("*"), *(h.log for h in ran)]:
        if path.is_file() and "input" not in path.parts:
            assert_no_secret(str(path), path.read_bytes())


def test_spot_interruption_resumes_from_the_restored_checkpoint_and_ends_as_uninterrupted(
    setup, moto_url, tmp_path
):
    desc = create_job(moto_url, setup["home"], 2, 1)
    assert desc["EnableManagedSpotTraining"] is True
    hosts = fake.build_trees(desc, moto_url, tmp_path / "attempt-1")
    fake.start(hosts, desc)
    # Capacity is reclaimed mid-way: every process on every host dies at once.
    published = [h.tree / "checkpoints" / f"step-{INTERVAL}" for h in hosts]
    deadline = time.monotonic() + 400
    while not all(p.is_dir() for p in published):
        assert all(h.proc.poll() is None for h in hosts), hosts[0].output()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    fake.kill(hosts)
    assert not (hosts[0].tree / "checkpoints" / CHECKPOINTS[-1]).exists(), "not interrupted"
    assert not any((hosts[0].tree / "model").iterdir())
    # SageMaker syncs every host's /opt/ml/checkpoints to one S3 prefix and restores it
    # into every host of the restarted job.
    s3_copy = tmp_path / "checkpoint-s3-prefix"
    for host in hosts:
        shutil.copytree(host.tree / "checkpoints", s3_copy, dirs_exist_ok=True)
    ran = fake.run_job(desc, moto_url, tmp_path / "attempt-2", restore_checkpoints=s3_copy)
    log = ran[0].output()
    assert "resumed from checkpoint" in log
    first = read_losses(hosts[0].tree / "output" / "data" / "metrics.jsonl")
    second = read_losses(ran[0].tree / "output" / "data" / "metrics.jsonl")
    resumed_at = min(second) - 1
    assert resumed_at >= INTERVAL and resumed_at % INTERVAL == 0
    assert max(second) == STEPS
    reference = setup["reference"]
    assert second == {s: reference[s] for s in range(resumed_at + 1, STEPS + 1)}
    assert {s: first[s] for s in range(1, resumed_at + 1)} == {
        s: reference[s] for s in range(1, resumed_at + 1)
    }
    assert (ran[0].tree / "model" / "config.json").is_file()
