"""sagemaker: run the job as an Amazon SageMaker training job (SageMaker Python SDK v3).

``titan run CONFIG --backend sagemaker`` packages titan and the effective
config into the training job's code channel, builds a ``ModelTrainer``
(``Compute``, ``SourceCode``, the ``Torchrun`` driver with one process per
GPU, the S3 input channel, checkpoint and TensorBoard configs, stopping
condition, tags, VPC) and creates the job. In the container the SDK's own
drivers start torchrun, whose ranks run :mod:`titan.backends.sagemaker.container`.

This module stays light: the SDK (about 1 GB, 2 s to import) is imported
only when a SageMaker job is launched or inspected, so ``titan --help`` and
``titan plugins list`` never load it. Without the SDK installed, ``--backend
sagemaker`` says in one line what to install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from titan.core import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    import typer

    from titan.core.data.sources import DataSourceRegistry
    from titan.core.jobs import JobRecord, JobStatus, Progress
    from titan.core.launch import PreparedJob
    from titan.core.layout import LaunchLayout
    from titan.core.registry import BackendRegistry
    from titan.core.trainer import Trainer

AUTOLOAD = True

INSTALL_HINT = "pip install 'titan-backends[sagemaker]' (a clone's `uv sync` installs it)"


@dataclass
class SageMakerSection:
    """``[sagemaker]``: where and how the SageMaker training job runs (docs/sagemaker.md)."""

    role: str = ""
    """IAM role ARN the job runs as (arn:aws:iam::<account>:role/<name>); required."""
    region: str = ""
    """AWS region; empty: AWS_REGION / AWS_DEFAULT_REGION / the profile's region."""
    profile: str = ""
    """AWS profile for titan's own calls; empty: the default credential chain."""
    instance_type: str = "ml.p5.48xlarge"
    instance_count: int = 1
    processes_per_host: int = 0
    """torchrun processes per instance; 0: one per GPU of instance_type (8 on ml.p5.48xlarge)."""
    gpus_per_instance: int = 0
    """GPUs of one instance; 0: from titan's table of instance types. Set it (with gpu_model)
    for a type titan does not know; on a known type it overrides the table."""
    gpu_model: str = ""
    """GPU model of instance_type (H100, H200, A100 80GB, L40S, ...); empty: from titan's table.
    Set it (with gpus_per_instance) for a type titan does not know; it overrides the table."""
    volume_size_gb: int = 500
    """EBS volume per instance (the container's /opt/ml, checkpoints included)."""
    spot: bool = False
    """Managed spot training: cheaper, may be interrupted; titan resumes from /opt/ml/checkpoints."""
    max_runtime_s: int = 86400
    """Stop the job after this many seconds of training."""
    max_wait_s: int = 0
    """Spot only: seconds to wait for capacity plus training; 0: twice max_runtime_s."""
    input: str = ""
    """S3 prefix of the training data (s3://bucket/c4/en/); becomes channel `input_channel`."""
    input_channel: str = "train"
    bucket: str = ""
    """S3 bucket for code, outputs, checkpoints; empty: SageMaker's sagemaker-<region>-<account>."""
    output_path: str = ""
    """S3 prefix for model.tar.gz; empty: s3://<bucket>/titan/."""
    checkpoint_s3_uri: str = ""
    """S3 prefix synced with /opt/ml/checkpoints; empty: s3://<bucket>/titan/<job>/checkpoints."""
    tensorboard_s3_uri: str = ""
    """S3 prefix for /opt/ml/output/tensorboard; empty: s3://<bucket>/titan/tensorboard/."""
    tensorboard: bool = True
    """Write TensorBoard events to /opt/ml/output/tensorboard (synced to S3 while running)."""
    image_uri: str = ""
    """Training image; empty: the AWS PyTorch training image for the region (titan pip-installed
    at start). See `titan sagemaker dockerfile` for an image with titan inside."""
    pytorch_version: str = "2.10"
    """Version of the default AWS PyTorch training image."""
    py_version: str = "py313"
    install_titan: str = "auto"
    """auto: pip-install titan in the container unless image_uri is set; always; never."""
    job_name: str = ""
    """Base name of the training job (SageMaker appends a timestamp); empty: titan-<flavor>."""
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    """KEY=VALUE tags on the training job."""
    environment: list[str] = field(default_factory=list)
    """KEY=VALUE variables for the container (never secrets: use the job's IAM role)."""
    model_dtype: str = "bfloat16"
    """dtype of the Hugging Face model written to /opt/ml/model (auto keeps the checkpoint's)."""
    efa: bool = True
    """Set the EFA/NCCL variables multi-node p4d/p5 jobs need (docs/sagemaker.md lists them)."""


def require_sdk() -> None:
    """Raise a one-line ConfigError naming the extra if the SageMaker SDK v3 is missing."""
    from titan.core.errors import ConfigError

    try:
        import sagemaker.train  # noqa: F401  (v3; 2.x has no sagemaker.train)
    except ImportError:
        raise ConfigError(
            f"--backend sagemaker needs the SageMaker Python SDK 3.x: {INSTALL_HINT}"
        ) from None


def require_boto3() -> None:
    """``titan jobs`` / ``logs`` / ``cancel`` need boto3 only (the SDK brings it)."""
    from titan.core.errors import ConfigError

    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError(f"SageMaker jobs need boto3: {INSTALL_HINT}") from None


@dataclass
class SageMakerBackend:
    name: str = "sagemaker"
    description: str = "an Amazon SageMaker training job (ModelTrainer, torchrun; S3 data)"

    def layout(self, job: PreparedJob, offline: bool) -> LaunchLayout:
        """Instances x processes and their GPU, from titan's table of instance types.

        No SDK import: what only SageMaker knows (quotas, capacity) is found when
        the job is created. The rest of ``[sagemaker]`` (role, S3 URIs, spot limits,
        environment, the profile) is checked here too, so that every mistake is
        found before anything is printed. Online (not ``--dry-run``) the AWS
        credentials are resolved and checked (STS GetCallerIdentity) and the local
        dump folder, where titan keeps the job's config and request, must be
        writable. The notes say where the job checkpoints and which versions it
        installs. The job writes in its container and S3, not in the local dump
        folder: core's checks of that folder's runs do not apply
        (``dump_folder_here=False``).
        """
        import dataclasses
        from pathlib import Path

        from titan.backends.sagemaker.instances import launch_layout
        from titan.backends.sagemaker.request import launch_notes, plan

        p = plan(job, image_lookup=False)
        layout = launch_layout(job)
        notes = tuple(launch_notes(job, p))
        if not offline:
            from titan.backends.sagemaker.credentials import check_credentials
            from titan.core.folders import check_folder

            dump = job.config.job.dump_folder
            check_folder("job.dump_folder", dump, Path(dump))
            check_credentials(job.config.sagemaker, p.region)
        return dataclasses.replace(layout, notes=notes, dump_folder_here=False)

    def launch(self, job: PreparedJob, dry_run: bool, wait: bool = False) -> int:
        require_sdk()
        from titan.backends.sagemaker.launch import launch

        return launch(job, dry_run=dry_run, wait=wait)

    def state(self, record: JobRecord) -> JobStatus:
        """The job's state, with why it ended (failure reason, checkpoints, how to continue)."""
        require_boto3()
        from titan.backends.sagemaker.jobs import job_status

        return job_status(record)

    def logs(self, record: JobRecord, follow: bool, out: TextIO) -> int:
        require_boto3()
        from titan.backends.sagemaker.jobs import job_logs

        return job_logs(record, follow, out)

    def cancel(self, record: JobRecord) -> JobStatus:
        """StopTrainingJob; a job that already ended says so and is left alone."""
        require_boto3()
        from titan.backends.sagemaker.jobs import stop_job

        return stop_job(record)

    def progress(self, record: JobRecord) -> Progress | None:
        """The newest log step of rank 0 in the job's CloudWatch log (short timeouts)."""
        require_boto3()
        from titan.backends.sagemaker.jobs import job_progress

        return job_progress(record)


@hookimpl
def titan_register_backends(registry: BackendRegistry) -> None:
    registry.add(SageMakerBackend())


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"sagemaker": SageMakerSection}


@hookimpl
def titan_register_data_sources(registry: DataSourceRegistry) -> None:
    """``sm-channel:NAME``: an input channel's folder in the job's container."""
    from titan.backends.sagemaker.channels import PREFIX, channel_dir

    registry.add(PREFIX, channel_dir)


@hookimpl
def titan_add_commands(app: typer.Typer) -> None:
    from titan.backends.sagemaker.dockerfile import sagemaker_app

    app.add_typer(sagemaker_app, name="sagemaker")


# --- in the training job's container only (see titan.backends.sagemaker.container) ---


def _in_container() -> bool:
    import os

    return os.environ.get("TITAN_SAGEMAKER_CONTAINER") == "1"


@hookimpl
def titan_checkpoint_saved(trainer: Trainer, path: Path) -> None:
    """The checkpoint just saved is complete on every rank: publish this host's copy."""
    if _in_container():
        from titan.backends.sagemaker.container import publish_host_checkpoint

        publish_host_checkpoint(trainer, path)


@hookimpl
def titan_train_end(trainer: Trainer) -> None:
    """Write the final model to /opt/ml/model (the last checkpoint was published when saved)."""
    if _in_container():
        from titan.backends.sagemaker.container import export_final_model

        export_final_model(trainer)
