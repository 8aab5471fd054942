"""The SDK's own container drivers train titan on fake SageMaker hosts built from moto's request.

`titan run --backend sagemaker` creates the job in moto; fake_sagemaker.py
lays out /opt/ml per host from DescribeTrainingJob and moto's S3 and starts
the request's entrypoint (the SDK's sm_train.sh -> torchrun driver ->
torchrun -> titan's entry script) in private mount/UTS/PID namespaces, all in
a loopback-only network. Losses must equal `titan run --nproc 2` on this
machine (tests/exact_runs.py's bitwise setup); checkpoints, TensorBoard events
and the final Hugging Face model must be where SageMaker collects them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exact_runs import read_losses
from gates import STEP_GATE, gated_env, wait_for_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_sagemaker as fake  # noqa: E402
from sm_helpers import BUCKET as SM_BUCKET  # noqa: E402
from sm_helpers import (  # noqa: E402
    DATA_BUCKET,
    REGION,
    REPO,
    ROLE,
    assert_no_secret,
    aws_env,
    client,
    titan,
)

STEPS = 24
INSTALL_STEPS = 8  # the install-at-start job: a shorter run of the same schedule
INTERVAL = 4
CHECKPOINTS = [f"step-{s}" for s in range(INTERVAL, STEPS + 1, INTERVAL)]
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/titan:test"  # "titan already inside"
TOKENIZER = (  # a local tokenizer file: it travels in the code channel
    REPO / "packages/core/src/titan/core/assets/tokenizers/tinyshakespeare_bpe.json"
)
RUN = [f"--checkpoint.interval={INTERVAL}", f"--model.tokenizer_path={TOKENIZER}"]


@pytest.fixture(scope="module")
def setup(
    moto_url: str, exact_args: list[str], run_exact, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """Buckets, the exact runs' corpus in S3 and the reference run `titan run --nproc 2`."""
    s3 = client("s3", moto_url)
    for b in (SM_BUCKET, DATA_BUCKET):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": REGION})
    corpus = next(a for a in exact_args if a.startswith("--training.dataset_path="))
    s3.upload_file(corpus.split("=", 1)[1], DATA_BUCKET, "corpus/train.jsonl")
    ref = run_exact("sm-reference", "--nproc", "2", f"--training.steps={STEPS}", *RUN).ok()
    return {"home": tmp_path_factory.mktemp("home"), "reference": ref.losses}


_JOBS: dict[tuple, dict] = {}


def create_job(
    moto_url: str, home: Path, exact_args: list[str], hosts: int, procs: int, *extra: str
) -> dict:
    """The job `titan run --backend sagemaker` creates in moto (once per layout; spot on)."""
    key = (hosts, procs, *extra)
    if key in _JOBS:
        return _JOBS[key]
    proc = titan(
        "run",
        "--backend",
        "sagemaker",
        *exact_args,
        f"--training.steps={STEPS}",
        *RUN,
        "--sagemaker.instance_type=ml.g5.12xlarge",  # 4 x A10G: fits both layouts
        f"--sagemaker.instance_count={hosts}",
        f"--sagemaker.processes_per_host={procs}",
        f"--sagemaker.role={ROLE}",
        f"--sagemaker.input=s3://{DATA_BUCKET}/corpus/",
        f"--job.dump_folder={home / f'launch-{len(_JOBS)}'}",
        "--sagemaker.spot=true",
        *(extra or [f"--sagemaker.image_uri={IMAGE}"]),
        env=aws_env(moto_url, home),
    )
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    desc = client("sagemaker", moto_url).describe_training_job(TrainingJobName=name)
    _JOBS[key] = desc
    return desc


@pytest.mark.parametrize(("hosts", "procs"), [(1, 2), (2, 1)], ids=["1host-x2", "2hosts-x1"])
def test_sdk_drivers_train_titan_like_a_local_two_process_run(
    hosts, procs, setup, moto_url, exact_args, tmp_path
):
    desc = create_job(moto_url, setup["home"], exact_args, hosts, procs)
    assert desc["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    ran = fake.run_job(desc, moto_url, tmp_path)
    algo1 = ran[0].tree
    log = ran[0].output()
    # The SDK's drivers ran torchrun with the host layout SageMaker gives.
    assert f"--nnodes={hosts}" in log and f"--nproc_per_node={procs}" in log
    if hosts > 1:
        assert "--master_addr=algo-1" in log and "--node_rank=0" in log
        assert "--node_rank=1" in ran[1].output()
    assert read_losses(algo1 / "output" / "data") == setup["reference"]
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
    setup, moto_url, exact_args, tmp_path
):
    desc = create_job(moto_url, setup["home"], exact_args, 2, 1)
    assert desc["EnableManagedSpotTraining"] is True
    hosts = fake.build_trees(desc, moto_url, tmp_path / "attempt-1")
    # Every rank is held at the start of the step after the first checkpoint, once its own
    # host has published that checkpoint (tests/gates.py): the interruption lands exactly
    # there, not wherever the run happened to be when a poll saw a folder.
    gate_env, _ = gated_env(
        tmp_path, STEP_GATE, at=INTERVAL + 1, after=Path(f"/opt/ml/checkpoints/step-{INTERVAL}")
    )
    extra = {k: v for k, v in gate_env.items() if k == "PYTHONPATH" or k.startswith("TITAN_TEST")}
    extra["TITAN_TEST_GATE"] = "/opt/ml/gate"  # each host's own folder (its tree is /opt/ml)
    for host in hosts:
        (host.tree / "gate").mkdir()
    fake.start(hosts, desc, extra)
    for host in hosts:
        wait_for_file(host.tree / "gate" / "reached", host.proc, timeout=400)
    # Capacity is reclaimed: every process on every host dies at once.
    fake.kill(hosts)
    for host in hosts:
        assert {p.name for p in (host.tree / "checkpoints").iterdir()} == {f"step-{INTERVAL}"}
    assert not any((hosts[0].tree / "model").iterdir())
    reference = setup["reference"]
    first = read_losses(hosts[0].tree / "output" / "data")
    assert first == {s: reference[s] for s in range(1, INTERVAL + 1)}
    # SageMaker syncs every host's /opt/ml/checkpoints to one S3 prefix and restores it
    # into every host of the restarted job.
    s3_copy = tmp_path / "checkpoint-s3-prefix"
    for host in hosts:
        shutil.copytree(host.tree / "checkpoints", s3_copy, dirs_exist_ok=True)
    ran = fake.run_job(desc, moto_url, tmp_path / "attempt-2", restore_checkpoints=s3_copy)
    assert "resumed from checkpoint" in ran[0].output()
    second = read_losses(ran[0].tree / "output" / "data")
    assert second == {s: reference[s] for s in range(INTERVAL + 1, STEPS + 1)}
    assert (ran[0].tree / "model" / "config.json").is_file()


def bare_image(folder: Path) -> Path:
    """A fresh venv standing in for the AWS PyTorch image: the lock's packages, no titan.

    The AWS image brings torch and its kin, and a real job fetches the rest of the lock's
    pins from PyPI; here no index is reachable (loopback only), so the venv holds every
    third-party package of uv.lock already (``uv sync --no-install-workspace`` from uv's
    cache, offline, hard links: seconds) and pip in the container finds those pins
    satisfied. titan is not in it: only the wheels of the code channel can bring it.
    """
    from titan.backends.sagemaker.requirements import uv_binary

    subprocess.run([sys._base_executable, "-m", "venv", str(folder)], check=True, timeout=300)
    uv = uv_binary()
    assert uv, "uv runs this suite (`uv run pytest`), so it is there"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(folder)
    sync = [uv, "sync", "--frozen", "--offline", "--no-dev", "--no-install-workspace", "--inexact"]
    proc = subprocess.run(sync, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder


def test_an_image_without_titan_pip_installs_its_wheels_at_start_and_trains(
    setup, moto_url, exact_args, tmp_path
):
    """No image given: the job names the AWS image, and every host pip-installs titan at start.

    What runs is the service's and the SDK's own path: sm_train.sh calls the SDK's
    install_requirements.py, which runs ``pip install -r requirements.txt`` in the code
    channel: the lock's pins with their hashes (pip's hash-checking mode), then titan's
    repacked wheels. The image's pip is set to use no index (PIP_NO_INDEX, as an image's
    pip configuration would be), so nothing can come from the network.
    """
    desc = create_job(
        moto_url, setup["home"], exact_args, 1, 2, f"--training.steps={INSTALL_STEPS}"
    )
    assert "/pytorch-training:" in desc["AlgorithmSpecification"]["TrainingImage"]
    image = bare_image(tmp_path / "image")
    python = str(image / "bin" / "python")
    probe = [python, "-c", "import titan"]
    assert subprocess.run(probe, capture_output=True, env={}).returncode != 0  # not inside yet
    ran = fake.run_job(
        desc,
        moto_url,
        tmp_path / "job",
        image_bin=image / "bin",
        env_extra={"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    log = ran[0].output()
    assert "install_requirements.py requirements.txt" in log  # the SDK's step ran
    installed = next(ln for ln in log.splitlines() if ln.startswith("Successfully installed"))
    # Exactly the wheels of the code channel (titan-core, titan-backends and the
    # distributions of the job's plugins), nothing else: every pin was already satisfied.
    shipped = ran[0].tree / "input" / "data" / "code" / "wheels"
    wheels = {w.name.split("-")[0].replace("_", "-") for w in shipped.glob("*.whl")}
    assert {"titan-core", "titan-backends"} <= wheels
    assert {w.rsplit("-", 1)[0] for w in installed.split()[2:]} == wheels
    where = subprocess.run(
        [python, "-c", "import titan.backends.sagemaker.container as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        env={},
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(image / "lib")  # from the wheels, in it
    # The ranks ran that titan (the image's python, nothing else on its path): same losses.
    losses = read_losses(ran[0].tree / "output" / "data")
    assert losses == {s: setup["reference"][s] for s in range(1, INSTALL_STEPS + 1)}
    assert (ran[0].tree / "model" / "config.json").is_file()
