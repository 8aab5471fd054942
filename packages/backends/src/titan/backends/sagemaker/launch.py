"""Create the SageMaker training job (or, for ``--dry-run``, print its request)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from titan.backends.sagemaker.bundle import write_code_dir
from titan.backends.sagemaker.credentials import AwsError, aws_error, check_credentials
from titan.backends.sagemaker.request import Plan, build_request, plan
from titan.core.launch import CONFIG_FILE_NAME, PreparedJob

_console = Console(stderr=True, highlight=False, soft_wrap=True)

CODE_DIR = "sagemaker_code"
REQUEST_FILE = "sagemaker_request.json"


def console_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{name}"


def request_json(request: dict[str, Any]) -> str:
    return json.dumps(request, indent=2, sort_keys=True, default=str)


def launch(job: PreparedJob, dry_run: bool, wait: bool = False) -> int:
    p = plan(job)
    sec = job.config.sagemaker
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="titan-sm-code-") as tmp:
            wheels = write_code_dir(job, Path(tmp), _channel(job), sec.tensorboard, p.install_titan)
            request, _ = build_request(job, p, Path(tmp), offline=True)
        _console.print(
            "dry run: the CreateTrainingJob request titan would send (built by the SageMaker "
            "SDK with no AWS call: nothing uploaded, no job created); in the container: "
            f"torchrun, {sec.instance_count} host(s) x {p.processes_per_host} processes, "
            f"titan {'pip-installed at start from ' + str(len(wheels)) + ' wheels' if wheels else 'from the image'}"
        )
        print(request_json(request), flush=True)
        return 0
    # Credentials first (`titan run` checked them already; a direct caller may not have):
    # nothing is written, here or in S3, for a launch they would refuse.
    check_credentials(sec, p.region)
    # The code channel is built outside the dump folder and kept there only once the job
    # exists: a refused launch leaves the folder as it was (a previous launch's code included).
    with tempfile.TemporaryDirectory(prefix="titan-sm-code-") as tmp:
        staged = Path(tmp) / CODE_DIR
        write_code_dir(job, staged, _channel(job), sec.tensorboard, p.install_titan)
        try:
            request, _ = build_request(job, p, staged, offline=False)
        except Exception as exc:
            refused = _refusal(sec, exc)
            if refused is None:
                raise
            raise refused from None
        name = request["TrainingJobName"]
        dump = job.dump_folder.resolve()
        dump.mkdir(parents=True, exist_ok=True)
        config = _write_config(job, dump)
        code_dir = dump / CODE_DIR
        shutil.rmtree(code_dir, ignore_errors=True)  # a previous launch's files must not ride along
        shutil.copytree(staged, code_dir)
    (dump / REQUEST_FILE).write_text(request_json(request) + "\n")
    record = _record(job, p, name, request, config)
    checkpoints = record.extra["checkpoint_s3_uri"]
    _console.print(f"SageMaker training job [bold]{escape(name)}[/] created in {p.region}")
    _console.print(f"  console:     {console_url(p.region, name)}")
    _console.print(f"  checkpoints: {escape(checkpoints)}")
    _console.print(f"  follow:      titan logs {name} -f")
    print(name, flush=True)
    if wait:
        from titan.backends.sagemaker.jobs import job_logs

        return job_logs(record, follow=True, out=sys.stdout)
    return 0


def _refusal(sec: Any, exc: Exception) -> Exception | None:
    """One line for what AWS refused while titan uploaded the code or created the job."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    if not isinstance(exc, BotoCoreError | ClientError):
        return None
    known = aws_error(sec, exc)
    if known is not None or not isinstance(exc, ClientError):
        return known
    error = exc.response.get("Error", {})
    return AwsError(
        f"AWS refused {exc.operation_name}: {error.get('Code', '?')}: "
        f"{error.get('Message', '') or exc}; nothing was created (check the account's "
        "quotas, the role's and your permissions, and the region)"
    )


def _write_config(job: PreparedJob, dump: Path) -> Path:
    """The job's effective config as ``job_config.toml`` in the dump folder (what it runs with:
    the container's copy differs only in its paths). No ``.next`` staging as for local runs:
    no rank reads this file, and it must describe the job just created."""
    from titan.core.secrets import redact

    path = dump / CONFIG_FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(redact(job.effective_toml()))
    tmp.replace(path)
    return path


def _channel(job: PreparedJob) -> str | None:
    sec = job.config.sagemaker
    return sec.input_channel if sec.input else None


def _record(job: PreparedJob, p: Plan, name: str, request: dict[str, Any], config: Path) -> Any:
    """Store the job (``titan jobs``) and return its record."""
    from titan.core.jobs import JobRecord, job_name, job_store, unique_name

    store = job_store()
    record = JobRecord(
        backend="sagemaker",
        id=name,
        name=unique_name(job_name(job), store),
        cluster=f"{p.account}/{p.region}",
        dump_folder=str(job.dump_folder.resolve()),
        logs=[],
        extra={
            "region": p.region,
            "profile": job.config.sagemaker.profile,
            "console": console_url(p.region, name),
            "config": str(config),
            "output_path": request.get("OutputDataConfig", {}).get("S3OutputPath", ""),
            "checkpoint_s3_uri": request.get("CheckpointConfig", {}).get("S3Uri", ""),
            "tensorboard_s3_uri": request.get("TensorBoardOutputConfig", {}).get(
                "S3OutputPath", ""
            ),
        },
    )
    store.add(record)
    return record
