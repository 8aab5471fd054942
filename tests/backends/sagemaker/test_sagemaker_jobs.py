"""`titan jobs`, `titan logs [-f]`, `titan cancel` and `titan run --wait` on SageMaker jobs (moto).

moto completes every training job at once and creates no CloudWatch streams:
the tests seed log streams in moto's CloudWatch Logs, and move a job's status
in moto's own (in-process) state to play a running job. moto has no
StopTrainingJob (not in 5.2.5, nor in 5.2.6, the newest release: its SageMaker
backend never leaves Completed): a botocore handler answers that one call, as
the service would, after botocore has built the request titan sends.
"""

from __future__ import annotations

import json
import shlex
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
    uri = f"s3://{BUCKET}/titan-test/{name}/checkpoints"  # SageMaker's default: one per job
    request["CheckpointConfig"]["S3Uri"] = uri
    client("sagemaker", moto_url).create_training_job(**request)
    extra = {**first.extra, "checkpoint_s3_uri": uri}
    store.add(type(first)(**{**first.__dict__, "id": name, "name": name, "extra": extra}))
    return name


def record_of(moto_url: str, home: Path, name: str, monkeypatch):
    """The job's record, with this process pointed at moto as `titan` would be."""
    from titan.core.jobs import JobStore

    env = aws_env(moto_url, home)
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return JobStore(Path(env["TITAN_HOME"]) / "jobs").find(name)


def put_checkpoint(moto_url: str, uri: str, step: int, complete: bool = True) -> None:
    """What SageMaker syncs from /opt/ml/checkpoints: step-N/ with DCP's .metadata written last."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = client("s3", moto_url)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/step-{step}/__0_0.distcp", Body=b"shard")
    if complete:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/step-{step}/.metadata", Body=b"meta")


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


def _read_until(
    proc: subprocess.Popen,
    needle: str,
    seen: list[str],
    timeout: float = 120,
    stream: str = "stdout",
) -> None:
    """Read ``proc``'s ``stream`` line by line into ``seen`` until a line holds ``needle``."""
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in seen):
        assert time.monotonic() < deadline, f"'{needle}' never came: {seen}"
        line = getattr(proc, stream).readline()
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
    # The follower has seen the job running before it fails (its status line on stderr).
    _read_until(proc, "RUNNING", [], stream="stderr")
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


def _answer_stop_training_job(sm, job) -> list[dict]:
    """moto has no StopTrainingJob: answer it as the service does (the job goes Stopping)."""
    stopped: list[dict] = []

    def stop_training_job(model, params, **_):
        if model.name != "StopTrainingJob":
            return None
        from botocore.awsrequest import AWSResponse

        stopped.append(params)
        job.training_job_status, job.secondary_status = "Stopping", "Stopping"
        return AWSResponse("https://moto.invalid", 200, {}, None), {}

    sm.meta.events.register("before-call.sagemaker.StopTrainingJob", stop_training_job)
    return stopped


def test_cancel_stops_a_running_job_and_leaves_an_ended_one(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker.jobs import client as titan_client
    from titan.backends.sagemaker.jobs import stop_job

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    record = record_of(moto_url, home, name, monkeypatch)
    sm = titan_client(record, "sagemaker")
    stopped = _answer_stop_training_job(sm, job)
    status = stop_job(record, sm)
    assert len(stopped) == 1 and b'"TrainingJobName": "' + name.encode() in stopped[0]["body"]
    assert status.state == "STOPPING"
    assert record.extra["checkpoint_s3_uri"] in status.detail
    env = aws_env(moto_url, home)
    assert "STOPPING" in next(ln for ln in titan("jobs", env=env).stdout.splitlines() if name in ln)
    # Stopping already, then ended: said, and StopTrainingJob is not sent again.
    assert stop_job(record, sm).state == "STOPPING" and len(stopped) == 1
    job.training_job_status, job.secondary_status = "Stopped", "Stopped"
    status = stop_job(record, sm)
    assert status.state == "STOPPED" and "had already ended; nothing to cancel" in status.detail
    assert len(stopped) == 1
    job.training_job_status, job.secondary_status = "Completed", "Completed"
    status = stop_job(record, sm)
    assert status.state == "COMPLETED" and "had already ended" in status.detail
    assert len(stopped) == 1
    # `titan cancel` of an ended job: said in one line, not an error.
    proc = titan("cancel", name, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "had already ended" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failed_job_says_why(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker import SageMakerBackend

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "Failed", "Failed"
    job.failure_reason = "AlgorithmError: ExecuteUserScriptError:\nexit code 1"
    status = SageMakerBackend().state(record_of(moto_url, home, name, monkeypatch))
    assert status.state == "FAILED"
    assert status.detail == "AlgorithmError: ExecuteUserScriptError: exit code 1"  # one line


def test_a_stopped_job_names_its_checkpoints_and_how_to_continue(
    moto_url, home, launched, monkeypatch
):
    from titan.backends.sagemaker import SageMakerBackend

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "Stopped", "Stopped"
    record = record_of(moto_url, home, name, monkeypatch)
    uri = record.extra["checkpoint_s3_uri"]
    status = SageMakerBackend().state(record)
    assert status.state == "STOPPED" and f"no complete checkpoint in {uri}" in status.detail
    put_checkpoint(moto_url, uri, 20)
    put_checkpoint(moto_url, uri, 40)
    put_checkpoint(moto_url, uri, 60, complete=False)  # still being synced: not a checkpoint
    status = SageMakerBackend().state(record)
    assert status.state == "STOPPED"
    assert f"checkpoint step 40 in {uri}" in status.detail
    assert f"--sagemaker.checkpoint_s3_uri={uri}" in status.detail


def test_max_runtime_after_a_checkpoint_is_resumable(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker import SageMakerBackend

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "Stopped", "MaxRuntimeExceeded"
    record = record_of(moto_url, home, name, monkeypatch)
    uri = record.extra["checkpoint_s3_uri"]
    status = SageMakerBackend().state(record)  # no checkpoint yet: it timed out, nothing to resume
    assert status.state == "TIMEOUT" and "--sagemaker.max_runtime_s" in status.detail
    put_checkpoint(moto_url, uri, 100)
    status = SageMakerBackend().state(record)
    assert status.state == "RESUMABLE"
    assert "MaxRuntimeExceeded after checkpoint step 100" in status.detail
    config = Path(record.dump_folder) / "job_config.toml"
    assert (
        f"titan run {config} --backend sagemaker --sagemaker.checkpoint_s3_uri={uri}"
        in status.detail
    )
    assert config.is_file()  # the command's config exists: the job's own
    # The command works as given (as a dry run here): same job, resuming from that prefix.
    command = shlex.split(status.detail.split("): ", 1)[1])
    assert command[:2] == ["titan", "run"]
    proc = titan(*command[1:], "--dry-run", env=aws_env(moto_url, home))
    assert proc.returncode == 0, proc.stderr
    request = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert request["CheckpointConfig"]["S3Uri"] == uri
    assert f"the job checkpoints to {uri}" in " ".join(proc.stderr.split())


def console_lines(total: int, rows: list[dict]) -> list[str]:
    """titan's per-log-step console lines (plain mode), as the job's rank 0 prints them."""
    import io

    from rich.console import Console

    from titan.core.builtin import console

    display = console._Display(total, live=False)
    buffer = io.StringIO()
    display.console = Console(file=buffer, width=400, no_color=True, highlight=False)
    for row in rows:
        display.update(row["step"], row)
    return buffer.getvalue().splitlines()


def test_progress_is_rank_zeros_last_log_step(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker import SageMakerBackend

    name = new_job(moto_url, home, launched)
    record = record_of(moto_url, home, name, monkeypatch)
    assert SageMakerBackend().progress(record) is None  # no log yet
    rows = [
        {"step": s, "loss": 11.0 - s / 10, "tokens_per_second": 12345.6 + s, "lr": 3e-4}
        for s in (10, 20, 30)
    ]
    lines = console_lines(200, rows)
    assert len(lines) == 3 and lines[-1].startswith("step    30/200")
    t0 = int(time.time() * 1000) - 60_000
    # An earlier attempt (a spot restart) in an older stream, rank 0's lines, other hosts' lines.
    put_logs(moto_url, name, "algo-1", [(t0 - 5000, "step   190/200  loss 1.0  tok/s 1  ETA ?")])
    stream = f"{name}/algo-1-1764550800"
    logs = client("logs", moto_url)
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    events = [(t0 + i, line) for i, line in enumerate(lines)]
    events.append((t0 + 10, "checkpoint step-30 saved"))
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": ts, "message": msg} for ts, msg in events],
    )
    put_logs(moto_url, name, "algo-2", [(t0 + 20, "step   999/999  loss 0.5  tok/s 9  ETA ?")])
    progress = SageMakerBackend().progress(record)
    assert progress is not None
    assert (progress.step, progress.total_steps) == (30, 200)
    assert progress.loss == pytest.approx(8.0)
    assert progress.tokens_per_second == pytest.approx(12376, abs=1)  # printed without decimals
    assert progress.eta_seconds is not None and progress.eta_seconds >= 0


def test_titan_jobs_shows_progress_and_details(moto_url, home, launched, monkeypatch):
    from titan.backends.sagemaker import SageMakerBackend
    from titan.core.job_queries import query_jobs
    from titan.core.registry import BackendRegistry

    name = new_job(moto_url, home, launched)
    job = moto_job(name)
    job.training_job_status, job.secondary_status = "InProgress", "Training"
    record = record_of(moto_url, home, name, monkeypatch)
    lines = console_lines(50, [{"step": 5, "loss": 7.25, "tokens_per_second": 2048.0}])
    put_logs(moto_url, name, "algo-1", [(int(time.time() * 1000) - 1000, lines[0])])
    registry = BackendRegistry()
    registry.add(SageMakerBackend())
    (view,) = query_jobs([record], registry, timeout_s=30)
    assert view.status.state == "RUNNING" and view.status.detail == "Training"
    assert (view.progress.step, view.progress.total_steps, view.progress.loss) == (5, 50, 7.25)


def test_logs_of_an_unknown_job_is_one_line(moto_url, home):
    proc = titan("logs", "no-such-job", env=aws_env(moto_url, home))
    assert proc.returncode == 2
    assert "titan jobs" in proc.stderr and "Traceback" not in proc.stderr
