"""From titan's ``[sagemaker]`` section to a SageMaker SDK v3 ``ModelTrainer`` and its request.

Everything that can be checked without AWS is checked here, before anything is
uploaded or created: the role ARN, S3 URIs, spot limits, secrets in the
environment, data that only exists on this machine. What is about the launch
layout (instance type, count, processes per host) is checked once, in
:func:`titan.backends.sagemaker.instances.launch_layout`, which ``titan run``
calls before this.

The exact CreateTrainingJob request is captured with a botocore
``provide-client-params`` handler on the boto3 session the SDK uses. For
``--dry-run`` a ``before-call`` handler answers the SDK's few S3/IAM calls
itself and stops at CreateTrainingJob, so the request is built by the SDK's
own code with no network, no credentials and no upload (the SDK's
``train(dry_run=True)`` uploads the code, so titan does not use it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from titan.backends.sagemaker.channels import PREFIX
from titan.backends.sagemaker.credentials import check_profile
from titan.backends.sagemaker.instances import launch_layout, resolve_instance
from titan.core.errors import ConfigError
from titan.core.layout import LAYOUT_ENV, LaunchLayout

ENV_VALUE_MAX = 512
"""CreateTrainingJob's limit on one Environment value (botocore's service model)."""

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+$")
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")

# On instance types with EFA (the table in instances.py) the SDK's torchrun driver itself
# sets FI_PROVIDER=efa, FI_EFA_USE_DEVICE_RDMA=1 and RDMAV_FORK_SAFE=1 (p4d/p5),
# NCCL_SOCKET_IFNAME (eth0) and NCCL_PROTO=simple; titan adds the rest of what NCCL over
# EFA needs.
EFA_ENV = {
    "FI_EFA_FORK_SAFE": "1",  # libfabric < 1.13 (older images): fork() with EFA registered memory
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a failed collective ends the job instead of a hang
    "NCCL_DEBUG": "WARN",
}

# Names that must never be passed into the job's environment.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|ACCESS_KEY|API_KEY)", re.I
)
SECRET_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "WANDB_API_KEY",
)


@dataclass
class Plan:
    """Everything the request needs, resolved and checked."""

    region: str
    role: str
    account: str
    bucket: str
    base_job_name: str
    processes_per_host: int
    max_wait_s: int | None
    output_path: str
    checkpoint_s3_uri: str  # may end with {job} (filled in by SageMaker's job name: see launch)
    tensorboard_s3_uri: str
    image_uri: str
    install_titan: bool
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"sagemaker.{what} entry '{item}' is not KEY=VALUE; write e.g. "
                f"--sagemaker.{what}='[\"team=llm\"]'"
            )
        out[key.strip()] = value
    return out


def resolve_region(sec: Any) -> str:
    region = sec.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and sec.profile:
        import boto3

        region = boto3.Session(profile_name=sec.profile).region_name
    if not region:
        raise ConfigError(
            "no AWS region for the SageMaker job; pass --sagemaker.region=us-east-1 "
            "(or set AWS_REGION)"
        )
    return region


def _check_s3(value: str, key: str) -> None:
    if value and not S3_URI.match(value):
        raise ConfigError(f"sagemaker.{key} is '{value}', not an S3 URI; write s3://bucket/prefix/")


def _job_base_name(sec: Any, job: Any) -> str:
    name = sec.job_name or f"titan-{job.config.model.name}-{job.config.model.flavor}"
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[:38]  # SDK appends a 24-char stamp
    return name or "titan"


def _check_data_reaches_the_job(job: Any, input_uri: str) -> None:
    """Data on this machine cannot reach the container: say so before uploading anything."""
    t = job.config.training
    places = [] if input_uri else [("training.dataset_path", t.dataset_path)]
    places += [("data.sources", s) for s in job.config.data.sources]
    for key, value in places:
        local = value and "://" not in value and not value.startswith(PREFIX)
        if local and Path(value).expanduser().exists():
            raise ConfigError(
                f"{key} '{value}' is on this machine and the SageMaker job cannot read it; "
                "upload it to S3 and pass --sagemaker.input=s3://bucket/prefix/ (or an s3:// URL)"
            )


def plan(job: Any, image_lookup: bool = True) -> Plan:
    """Check the ``[sagemaker]`` section against the job and resolve defaults (no AWS call)."""
    sec = job.config.sagemaker
    match = ROLE_ARN.match(sec.role or "")
    if not match:
        got = f"'{sec.role}'" if sec.role else "empty"
        raise ConfigError(
            f"sagemaker.role is {got}; pass the job's IAM role as a full ARN: "
            "--sagemaker.role=arn:aws:iam::123456789012:role/SageMakerRole"
        )
    if sec.max_runtime_s < 1:
        raise ConfigError("sagemaker.max_runtime_s must be 1 or more (seconds)")
    for key in ("input", "output_path", "checkpoint_s3_uri", "tensorboard_s3_uri"):
        _check_s3(getattr(sec, key), key)
    if sec.input and not sec.input.endswith("/"):
        raise ConfigError(
            f"sagemaker.input '{sec.input}' must end with '/': S3 channels are prefix matches, "
            f"so without it s3://b/c4 also pulls s3://b/c4-old/; pass '{sec.input}/'"
        )
    _check_data_reaches_the_job(job, sec.input)
    check_profile(sec)  # an unknown profile is known offline: refused by dry runs too
    checked: LaunchLayout | None = getattr(job, "layout", None)
    layout = checked or launch_layout(job)
    max_wait: int | None = None
    if sec.spot:
        max_wait = sec.max_wait_s or 2 * sec.max_runtime_s
        if max_wait < sec.max_runtime_s:
            raise ConfigError(
                f"sagemaker.max_wait_s ({sec.max_wait_s}) is less than sagemaker.max_runtime_s "
                f"({sec.max_runtime_s}); spot jobs need max_wait_s >= max_runtime_s: pass "
                f"--sagemaker.max_wait_s={2 * sec.max_runtime_s}"
            )
    elif sec.max_wait_s:
        raise ConfigError(
            "sagemaker.max_wait_s applies to spot jobs only; pass --sagemaker.spot=true or drop it"
        )
    if sec.install_titan not in ("auto", "always", "never"):
        raise ConfigError(
            f"sagemaker.install_titan is '{sec.install_titan}'; use auto, always or never"
        )
    if sec.model_dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(
            f"sagemaker.model_dtype is '{sec.model_dtype}'; use bfloat16, float16, float32 or auto"
        )
    env = _pairs(sec.environment, "environment")
    for key in env:
        if key in SECRET_VARS or SECRET_NAME.search(key):
            raise ConfigError(
                f"sagemaker.environment sets {key}, which looks like a secret; SageMaker shows "
                "the environment in the console and API: give the job's IAM role the access "
                "instead (or read it from AWS Secrets Manager in the job)"
            )
    if sec.efa and resolve_instance(sec).efa:
        env = {**EFA_ENV, **env}
    if checked is not None:  # the ranks check against the layout titan run checked
        env[LAYOUT_ENV] = layout_env(checked)
    region = resolve_region(sec)
    account = match.group(1)
    bucket = sec.bucket or f"sagemaker-{region}-{account}"
    base = _job_base_name(sec, job)
    image = sec.image_uri or (default_image(sec, region) if image_lookup else "")
    return Plan(
        region=region,
        role=sec.role,
        account=account,
        bucket=bucket,
        base_job_name=base,
        processes_per_host=layout.procs_per_node,
        max_wait_s=max_wait,
        output_path=sec.output_path or f"s3://{bucket}/titan/",
        checkpoint_s3_uri=sec.checkpoint_s3_uri,
        tensorboard_s3_uri=sec.tensorboard_s3_uri or f"s3://{bucket}/titan/tensorboard/",
        image_uri=image,
        install_titan=sec.install_titan == "always"
        or (sec.install_titan == "auto" and not sec.image_uri),
        environment=env,
        tags=_pairs(sec.tags, "tags"),
    )


def checkpoint_note(p: Plan) -> str:
    """Where the job checkpoints, and what a job with the same checkpoint URI does."""
    if p.checkpoint_s3_uri:
        return (
            f"the job checkpoints to {p.checkpoint_s3_uri} (synced with /opt/ml/checkpoints); "
            "SageMaker copies what that prefix holds into the job when it starts, so this job, "
            "and any later one given the same --sagemaker.checkpoint_s3_uri, resumes from the "
            "newest complete checkpoint there"
        )
    return (
        f"the job checkpoints to s3://{p.bucket}/{p.base_job_name}/<job name>/checkpoints, a "
        "new prefix for this job (SageMaker names the job when it is created; `titan run` prints "
        "the URI): it starts from step 0, a spot restart of it resumes from there, and a later "
        "job continues it when given that prefix as --sagemaker.checkpoint_s3_uri"
    )


def launch_notes(job: Any, p: Plan) -> list[str]:
    """What the user should know before the job is created: its checkpoints, its versions."""
    notes = [checkpoint_note(p)]
    if p.install_titan:
        from titan.backends.sagemaker.bundle import titan_distributions
        from titan.backends.sagemaker.requirements import (
            check_pinned,
            job_requirements,
            version_notes,
        )

        sec = job.config.sagemaker
        active = set(job.plugins.active)
        reqs = job_requirements(sec.py_version, active)
        check_pinned(titan_distributions(active), reqs, sec.py_version)
        notes += version_notes(sec, reqs)
        if sec.subnets:
            notes.append(
                "the job runs in your VPC and pip-installs its packages at start: its subnets "
                "need a route to the package index (a NAT gateway, or a mirror the image's pip "
                "uses), or the install fails; an image with titan inside needs none "
                "(`titan sagemaker dockerfile`, then --sagemaker.image_uri)"
            )
    return notes


def layout_env(layout: LaunchLayout) -> str:
    """``TITAN_LAUNCH_LAYOUT``'s value; its notes (for the user, said before launch) are
    dropped if the whole would pass SageMaker's 512-character limit on a value."""
    text = layout.to_env()
    if len(text) > ENV_VALUE_MAX:
        text = dataclasses.replace(layout, notes=()).to_env()
    return text


def default_image(sec: Any, region: str) -> str:
    """The AWS PyTorch training image for the region, from the SDK's offline table."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(
            "pytorch",
            region=region,
            version=sec.pytorch_version,
            py_version=sec.py_version,
            instance_type=sec.instance_type,
            image_scope="training",
        )
    except ValueError as exc:
        raise ConfigError(
            f"no AWS PyTorch training image for version {sec.pytorch_version}/{sec.py_version} "
            f"in {region} ({str(exc).splitlines()[0]}); set --sagemaker.pytorch_version / "
            "--sagemaker.py_version, or --sagemaker.image_uri"
        ) from None


# --- boto3 session with capture (and, for dry runs, canned answers) ------------


class _Stop(Exception):
    """Raised at CreateTrainingJob in a dry run, after the request is captured."""


def boto_session(sec: Any, region: str, offline: bool) -> Any:
    import boto3

    if offline:  # dummy keys: nothing is signed or sent, and no credential lookup happens
        return boto3.Session(
            aws_access_key_id="dry-run", aws_secret_access_key="dry-run", region_name=region
        )
    from titan.backends.sagemaker.credentials import session

    return session(sec, region)


def capture_requests(session: Any, into: dict[str, Any], offline: bool, bucket: str) -> None:
    """Record CreateTrainingJob's parameters in ``into``; offline, answer every call here."""

    def capture(params: dict[str, Any], **_: Any) -> None:
        into.update(params)

    session.events.register("provide-client-params.sagemaker.CreateTrainingJob", capture)
    if not offline:
        return

    def answer(model: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        op = model.name
        if op == "CreateTrainingJob":
            raise _Stop
        canned = {
            "ListBuckets": {"Buckets": [{"Name": bucket}]},
            "HeadBucket": {},
            "PutObject": {"ETag": '"dry-run"'},
            "SimulatePrincipalPolicy": {
                "EvaluationResults": [{"EvalActionName": "s3:PutObject", "EvalDecision": "allowed"}]
            },
        }
        if op not in canned:
            raise RuntimeError(
                f"dry run: unexpected AWS call {model.service_model.service_name}.{op}"
            )
        return AWSResponse("https://dry-run.invalid", 200, {}, None), canned[op]

    session.events.register("before-call.*.*", answer)


def sdk_session(boto: Any, bucket: str) -> Any:
    """The SDK Session: our bucket (no STS lookup) and no telemetry (no call outside boto3)."""
    from sagemaker.core.helper.session_helper import Session

    config = {
        "SchemaVersion": "1.0",
        "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
    }
    return Session(boto_session=boto, default_bucket=bucket, sagemaker_config=config)


@contextlib.contextmanager
def sdk_quiet(offline: bool) -> Iterator[None]:
    """Keep the SDK's INFO chatter off the console; skip its IAM role check in dry runs."""
    import logging

    saved = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    if offline:
        os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    loggers = [logging.getLogger(n) for n in ("sagemaker", "botocore.credentials")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if offline:
            if saved is None:
                os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
            else:
                os.environ["SAGEMAKER_VALIDATE_ROLE"] = saved


def model_trainer(job: Any, p: Plan, session: Any, code_dir: Path) -> Any:
    """The SDK v3 ModelTrainer for this job."""
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
        Tag,
        TensorBoardOutputConfig,
    )
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    from titan.backends.sagemaker.bundle import (
        ENTRY_SCRIPT,
        REQUIREMENTS,
        SM_CHECKPOINTS,
        SM_TENSORBOARD,
    )

    sec = job.config.sagemaker
    networking = None
    if sec.subnets or sec.security_group_ids:
        if not (sec.subnets and sec.security_group_ids):
            raise ConfigError(
                "a VPC needs both sagemaker.subnets and sagemaker.security_group_ids; pass both"
            )
        networking = Networking(
            subnets=list(sec.subnets), security_group_ids=list(sec.security_group_ids)
        )
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=p.role,
        base_job_name=p.base_job_name,
        training_image=p.image_uri,
        source_code=SourceCode(
            source_dir=str(code_dir),
            entry_script=ENTRY_SCRIPT,
            requirements=REQUIREMENTS if p.install_titan else None,
        ),
        distributed=Torchrun(process_count_per_node=p.processes_per_host),
        compute=Compute(
            instance_type=sec.instance_type,
            instance_count=sec.instance_count,
            volume_size_in_gb=sec.volume_size_gb,
            enable_managed_spot_training=sec.spot,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=sec.max_runtime_s,
            max_wait_time_in_seconds=p.max_wait_s,
        ),
        networking=networking,
        output_data_config=OutputDataConfig(s3_output_path=p.output_path),
        checkpoint_config=CheckpointConfig(
            s3_uri=p.checkpoint_s3_uri or None, local_path=SM_CHECKPOINTS
        ),
        environment=dict(p.environment),
        hyperparameters={},
        tags=[Tag(key=k, value=v) for k, v in p.tags.items()] or None,
    )
    if sec.tensorboard:
        trainer = trainer.with_tensorboard_output_config(
            TensorBoardOutputConfig(s3_output_path=p.tensorboard_s3_uri, local_path=SM_TENSORBOARD)
        )
    return trainer


def input_channels(job: Any) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    sec = job.config.sagemaker
    if not sec.input:
        return []
    return [InputData(channel_name=sec.input_channel, data_source=sec.input)]


def build_request(job: Any, p: Plan, code_dir: Path, offline: bool) -> tuple[dict, Any]:
    """Run the SDK up to CreateTrainingJob; returns (request, trainer). Offline: nothing sent."""
    request: dict[str, Any] = {}
    boto = boto_session(job.config.sagemaker, p.region, offline)
    capture_requests(boto, request, offline, p.bucket)
    with sdk_quiet(offline):
        trainer = model_trainer(job, p, sdk_session(boto, p.bucket), code_dir)
        with contextlib.suppress(_Stop):
            trainer.train(input_data_config=input_channels(job) or None, wait=False, logs=False)
    return request, trainer
