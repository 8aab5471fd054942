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
import tomllib
from collections.abc import Iterator
from pathlib import Path

from cli_runs import titan_cli
from prerequisites import require

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


NETNS_LINE = (
    "network namespaces (the SageMaker tests): run as root; a non-root test process can enter "
    "a loopback-only network namespace only through a user namespace, and then neither get "
    "back to the machine's network nor share its in-process moto server with the namespace "
    "(unshare(CLONE_NEWNET) failed, errno {errno})"
)
"""The one line a test that needs :func:`loopback_only` fails with where it cannot have it."""


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Run the block (and every process it starts) in a new network namespace: loopback only."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            require(NETNS_LINE.format(errno=ctypes.get_errno()))
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
    """``titan ARGS`` in a subprocess with the SageMaker tests' environment (``aws_env``)."""
    return titan_cli(*args, env=env, timeout=timeout, cwd=cwd)


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


REPO = Path(__file__).resolve().parents[3]


def lock_packages() -> dict[str, list[dict]]:
    """name -> the uv.lock entries of that name (some names have a version per Python)."""
    with (REPO / "uv.lock").open("rb") as f:
        lock = tomllib.load(f)
    out: dict[str, list[dict]] = {}
    for package in lock["package"]:
        out.setdefault(package["name"], []).append(package)
    return out
