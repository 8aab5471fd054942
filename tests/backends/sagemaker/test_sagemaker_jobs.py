"""`titan jobs`, `titan logs [-f]`, `titan cancel` and `titan run --wait` on SageMaker jobs (moto).

moto completes every training job at once and creates no CloudWatch streams:
the tests seed log streams in moto's CloudWatch Logs, and move a job's status
in moto's own (in-process) state to play a running job. moto has no
StopTrainingJob: a botocore handler answers that one call, as the service would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import (  # noqa: E402
    ACCOUNT,
    BUCKET,
    REGION,
    ROLE,
    aws_env,
    client,
    titan,
)

GROUP = "/aws/sagemaker/TrainingJobs"
LAUNCH = [
    "run",
    "--backend",
    "sagemaker",
    f"--sagemaker.role={ROLE}",
    f"--sagemaker.image_uri=123456789012.dkr.ecr.{REGION}.amazonaws.com/titan:test",
]


@pytest.fixture(scope="module")
def home(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    client("s3", moto_url).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    client("logs", moto_url).create_log_group(logGroupName=GROUP)
    return tmp_path_factory.mktemp("home")


def launch(moto_url: str, home: Path, *extra: str) -> str:
    proc = titan(*LAUNCH, f"--job.dump_folder={home / 'run'}", *extra, env=aws_env(moto_url, home))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def launched(moto_url: str, home: Path) -> str:
    """One job created by `titan run --backend sagemaker` (its record is in TITAN_HOME)."""
    return launch(moto_url, home)


_count = iter(range(1, 1000))


def new_job(moto_url: str, home: Path, launched: str) -> str:
    """Another job like ``launched``: its saved request sent again under a new name, its record."""
    import json

    from titan.core.jobs import JobStore

    store = JobStore(Path(aws_env(moto_url, home)["TITAN_HOME"]) / "jobs")
    first = store.find(launched)
    request = json.loads((Path(first.dump_folder) / "sagemaker_request.json").read_text())
    name = f"{launched[:40]}-{next(_count)}"
    request["TrainingJobName"] = name
    client("sagemaker", moto_url).create_training_job(**request)
    store.add(type(first)(**{**first.__dict__, "id": name, "name": name}))
    return name


def moto_job(name: str):
    """The job as moto's in-process backend holds it (the server runs in this process)."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def put_logs(moto_url: str, name: str, host: str, lines: list[tuple[int, str]]) -> None:
    logs = client("logs", moto_url)
    stream = f"{name}/{host}-1764547200"
    existing = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=stream)
    if not existing["logStreams"]:
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": ts, "message": msg} for ts, msg in lines],
    )


def test_jobs_lists_the_job_with_its_state(moto_url, home, launched):
    name = launched
    proc = titan("jobs", env=aws_env(moto_url, home))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if name in line)
    assert "sagemaker" in row and "COMPLETED" in row
    moto_job(name).training_job_status = "InProgress"
    moto_job(name).secondary_status = "Downloading"
    assert "PENDING" in next(
        ln for ln in titan("jobs", env=aws_env(moto_url, home)).stdout.splitlines() if name in ln
    )


def test_logs_print_every_host_in_time_order(moto_url, home, launched):
    name = new_job(moto_url, home, launched)
    t0 = int(time.time() * 1000) - 60_000  # CloudWatch drops events older than 14 days
    put_logs(moto_url, name, "algo-1", [(t0, "step 1 loss 10.9"), (t0 + 20, "step 2 loss 9.8")])
    put_logs(moto_url, name, "algo-2", [(t0 + 10, "rank 1 ready")])
    proc = titan("logs", name, env=aws_env(moto_url, home))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[algo-1] step 1 loss 10.9",
        "[algo-2] rank 1 ready",
        "[algo-1] step 2 loss 9.8",
    ]


def _follow(moto_url: str, home: Path, name: str) -> subprocess.Popen:
    env = aws_env(moto_url, home)
    env["TITAN_SAGEMAKER_POLL_S"] = "0.3"
    return subprocess.Popen(
        [sys.executable, "-m", "titan.core.cli", "logs", name, "-f"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen, needle: str, seen: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in seen):
        assert time.monotonic() < deadline, f"'{needle}' never came: {seen}"
        line = proc.stdout.readline()
        if line:
            seen.append(line.rstrip("\n"))
        elif proc.poll() is not None:
            raise AssertionError(f"follower ended early: {seen} {proc.stderr.read()}")


def test_logs_follow_a_running_job_to_its_end(moto_url, home, launched):
    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    t0 = int(time.time() * 1000) - 30_000
    put_logs(moto_url, name, "algo-1", [(t0, "step 1 loss 10.9")])
    proc = _follow(moto_url, home, name)
    seen: list[str] = []
    _read_until(proc, "step 1 loss", seen)
    put_logs(moto_url, name, "algo-1", [(t0 + 1000, "step 2 loss 9.7")])
    _read_until(proc, "step 2 loss", seen)
    put_logs(moto_url, name, "algo-1", [(t0 + 2000, "final model written")])
    job.training_job_status, job.secondary_status = "Completed", "Completed"
    out, err = proc.communicate(timeout=120)
    seen += out.splitlines()
    assert proc.returncode == 0, err
    assert seen == [
        "[algo-1] step 1 loss 10.9",
        "[algo-1] step 2 loss 9.7",
        "[algo-1] final model written",
    ]
    assert "RUNNING" in err and "COMPLETED" in err


def test_logs_follow_returns_non_zero_when_the_job_fails(moto_url, home, launched):
    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    proc = _follow(moto_url, home, name)
    time.sleep(1.0)
    job.training_job_status, job.secondary_status = "Failed", "Failed"
    job.failure_reason = "AlgorithmError: ExecuteUserScriptError: exit code 1"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "FAILED" in err and "AlgorithmError" in err


def test_run_wait_follows_the_job_and_returns_its_result(moto_url, home):
    proc = titan(
        *LAUNCH,
        f"--job.dump_folder={home / 'waited'}",
        "--wait",
        env={**aws_env(moto_url, home), "TITAN_SAGEMAKER_POLL_S": "0.3"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "COMPLETED" in proc.stderr


def test_cancel_stops_a_running_job(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker.jobs import client as titan_client
    from titan.backends.sagemaker.jobs import stop_job
    from titan.core.jobs import JobStore

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    env = aws_env(moto_url, home)
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    record = JobStore(Path(env["TITAN_HOME"]) / "jobs").find(name)
    sm = titan_client(record, "sagemaker")
    stopped: list[dict] = []

    def stop_training_job(model, params, **_):  # what the service does on StopTrainingJob
        if model.name != "StopTrainingJob":
            return None
        from botocore.awsrequest import AWSResponse

        stopped.append(params)
        job.training_job_status, job.secondary_status = "Stopping", "Stopping"
        return AWSResponse("https://moto.invalid", 200, {}, None), {}

    sm.meta.events.register("before-call.sagemaker.StopTrainingJob", stop_training_job)
    stop_job(record, sm)
    assert len(stopped) == 1 and b'"TrainingJobName": "' + name.encode() in stopped[0]["body"]
    assert "STOPPING" in next(ln for ln in titan("jobs", env=env).stdout.splitlines() if name in ln)
    job.training_job_status, job.secondary_status = "Stopped", "Stopped"
    # A job that has ended cannot be cancelled: one line, exit 2.
    proc = titan("cancel", name, env=env)
    assert proc.returncode == 2
    assert "already ended (STOPPED)" in proc.stderr


def test_logs_of_an_unknown_job_is_one_line(moto_url, home):
    proc = titan("logs", "no-such-job", env=aws_env(moto_url, home))
    assert proc.returncode == 2
    assert "titan jobs" in proc.stderr and "Traceback" not in proc.stderr
