"""Helpers for the SageMaker backend tests: a loopback-only network, moto, `titan` as a user runs it.

No test here may reach an AWS address. Each test module runs inside its own
network namespace that has nothing but a loopback interface (entered with
``unshare(CLONE_NEWNET)`` on the test's thread and left afterwards), so every
subprocess it starts (``titan run``, the SDK's container drivers) and the moto
server are cut off from the world: a call to a real AWS endpoint fails instead
of leaking. AWS credentials are dummies, the SDK's telemetry is off and every
AWS client is pointed at moto with ``AWS_ENDPOINT_URL``.

The dummy credentials and an ``HF_TOKEN`` double as canaries: tests assert
that none of them appears in the request, in S3, in logs or in outputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLONE_NEWNET = 0x40000000
REGION = "us-west-2"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
DATA_BUCKET = "titan-data"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIATITANCANARY0001",
    "AWS_SECRET_ACCESS_KEY": "titan-canary-secret-access-key-0001",
    "HF_TOKEN": "hf_titanCanaryToken0001",
}


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Run the block (and every process it starts) in a new network namespace: loopback only."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            pytest.fail(f"unshare(CLONE_NEWNET) failed (errno {ctypes.get_errno()}); run as root")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        libc.setns(old, CLONE_NEWNET)
        os.close(old)


def aws_env(moto_url: str | None, home: Path) -> dict[str, str]:
    """The environment of a titan process: dummy credentials, moto, telemetry and hub off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SAGEMAKER_")) and "proxy" not in k.lower()
    }
    env.update(SECRETS)
    env.update(
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        SAGEMAKER_VALIDATE_ROLE="false",  # moto lacks iam:SimulatePrincipalPolicy
        TITAN_HOME=str(home / "titan-home"),
        HOME=str(home),  # no ~/.aws of the machine's
        COLUMNS="200",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    if moto_url:
        env["AWS_ENDPOINT_URL"] = moto_url
    return env


def titan(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "titan.core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def client(service: str, moto_url: str):
    import boto3

    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id=SECRETS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRETS["AWS_SECRET_ACCESS_KEY"],
    )


def s3_objects(moto_url: str, uri: str) -> dict[str, bytes]:
    """key (relative to the prefix) -> bytes of every object under S3 prefix ``uri``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = client("s3", moto_url)
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix) :].lstrip("/")] = body
    return out


def assert_no_secret(where: str, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for name, value in SECRETS.items():
        assert value.encode() not in blob, f"{name} leaked into {where}"


def describe_json(moto_url: str, name: str) -> str:
    desc = client("sagemaker", moto_url).describe_training_job(TrainingJobName=name)
    return json.dumps(desc, default=str)


# --- a small exact-training setup (as tests/distributed uses) ----------------------

SEQ_LEN = 32
EXACT_ARGS = [
    "--model.flavor=debug",
    f"--training.seq_len={SEQ_LEN}",
    "--training.local_batch_size=1",
    "--training.global_batch_size=2",
    "--training.mixed_precision_param=float32",
    "--training.max_norm=0",
    "--lr_scheduler.warmup_steps=2",
    "--lr_scheduler.decay_type=none",
    "--metrics.log_freq=1",
]


def write_corpus(path: Path, n_docs: int = 120) -> Path:
    """A JSON-lines corpus of short documents (deterministic)."""
    import random

    words = [
        "the",
        "and",
        "to",
        "of",
        "you",
        "my",
        "that",
        "in",
        "is",
        "not",
        "with",
        "me",
        "it",
        "for",
        "be",
        "his",
        "your",
        "this",
        "but",
        "he",
    ]
    rng = random.Random(1234)
    lines = [
        json.dumps({"text": " ".join(rng.choice(words) for _ in range(SEQ_LEN + 8))})
        for _ in range(n_docs)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_losses(metrics: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out
