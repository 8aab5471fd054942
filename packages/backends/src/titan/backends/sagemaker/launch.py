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
from titan.backends.sagemaker.request import Plan, build_request, plan
from titan.core.launch import PreparedJob

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
    job.write_config()
    code_dir = job.dump_folder.resolve() / CODE_DIR
    shutil.rmtree(code_dir, ignore_errors=True)  # a previous launch's files must not ride along
    write_code_dir(job, code_dir, _channel(job), sec.tensorboard, p.install_titan)
    request, _ = build_request(job, p, code_dir, offline=False)
    name = request["TrainingJobName"]
    (job.dump_folder / REQUEST_FILE).write_text(request_json(request) + "\n")
    record = _record(job, p, name, request)
    _console.print(f"SageMaker training job [bold]{escape(name)}[/] created in {p.region}")
    _console.print(f"  console: {console_url(p.region, name)}")
    _console.print(f"  follow:  titan logs {name} -f")
    print(name, flush=True)
    if wait:
        from titan.backends.sagemaker.jobs import job_logs

        return job_logs(record, follow=True, out=sys.stdout)
    return 0


def _channel(job: PreparedJob) -> str | None:
    sec = job.config.sagemaker
    return sec.input_channel if sec.input else None


def _record(job: PreparedJob, p: Plan, name: str, request: dict[str, Any]) -> Any:
    """Store the job (``titan jobs``) and return its record."""
    from titan.core.jobs import JobRecord, job_store

    record = JobRecord(
        backend="sagemaker",
        id=name,
        name=name,
        dump_folder=str(job.dump_folder.resolve()),
        logs=[],
        extra={
            "region": p.region,
            "profile": job.config.sagemaker.profile,
            "console": console_url(p.region, name),
            "output_path": request.get("OutputDataConfig", {}).get("S3OutputPath", ""),
            "checkpoint_s3_uri": request.get("CheckpointConfig", {}).get("S3Uri", ""),
            "tensorboard_s3_uri": request.get("TensorBoardOutputConfig", {}).get(
                "S3OutputPath", ""
            ),
        },
    )
    job_store().add(record)
    return record
