"""``titan jobs`` / ``logs`` / ``cancel`` for SageMaker training jobs (boto3 only, no SDK objects).

State comes from DescribeTrainingJob (with, for a job that ended, why and what
is left: the failure reason, the checkpoints in S3 and how to continue), logs
and progress from CloudWatch Logs (group ``/aws/sagemaker/TrainingJobs``, one
stream per host: ``<job>/algo-N-<epoch>``), cancel is StopTrainingJob. The
record's ``extra`` holds the region and profile the job was created with.

``titan jobs`` gives each answer a few seconds: state, cancel and progress use
clients with short timeouts and a single retry (:data:`QUICK`); ``titan logs
-f`` keeps botocore's defaults.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Any, TextIO

from titan.core.errors import ConfigError
from titan.core.jobs import FINAL_STATES, JobRecord, JobStatus, Progress

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
POLL_ENV = "TITAN_SAGEMAKER_POLL_S"
PENDING = {
    "Starting",
    "Pending",
    "LaunchingMLInstances",
    "PreparingTrainingStack",
    "Downloading",
    "DownloadingTrainingImage",
}
REQUEUED = {"Restarting", "Interrupted"}  # spot capacity reclaimed; SageMaker restarts the job
LIMITS = ("MaxRuntimeExceeded", "MaxWaitTimeExceeded")
QUICK = {"connect_timeout": 3, "read_timeout": 4, "retries": {"max_attempts": 1}}
"""botocore Config of the calls ``titan jobs`` makes: a few seconds, one retry."""
LOG_PAGES = 3
"""Pages of 100 events read back from the end of rank 0's log for its last log step."""

# A log step of titan's console (titan.core.builtin.console, plain-line mode):
# "step    10/100  loss  9.1234  grad_norm ...  tok/s     1,234  ...  elapsed 0:00:12  ETA 0:01:30"
STEP_LINE = re.compile(
    r"step\s+(?P<step>\d+)/(?P<total>\d+)\s+loss\s+(?P<loss>\S+)"
    r".*?tok/s\s+(?P<tps>[\d,.]+)"
    r"(?:.*?ETA\s+(?P<eta>\d+:\d{2}:\d{2}|\?))?"
)


_clients: dict[tuple[str, ...], Any] = {}
_clients_lock = threading.Lock()


def client(record: JobRecord, service: str, quick: bool = False) -> Any:
    """A boto3 client for the record's profile and region, made once per process.

    ``titan jobs`` asks for every job's state and progress at once, in threads:
    botocore clients are thread-safe, sessions are not, and making a client
    (loading its service model) is most of the cost of a call.
    """
    profile, region = record.extra.get("profile") or "", record.extra.get("region") or ""
    key = (
        profile,
        region,
        service,
        str(quick),
        os.environ.get("AWS_ENDPOINT_URL", ""),
        os.environ.get("AWS_PROFILE", ""),
        os.environ.get("AWS_ACCESS_KEY_ID", ""),
    )
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            session = boto3.Session(profile_name=profile or None, region_name=region or None)
            _clients[key] = session.client(service, config=Config(**QUICK) if quick else None)
        return _clients[key]


def describe(record: JobRecord, sm: Any = None) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    sm = sm or client(record, "sagemaker")
    try:
        return sm.describe_training_job(TrainingJobName=record.id)
    except ClientError as exc:
        raise ConfigError(
            f"SageMaker does not know training job '{record.id}' in "
            f"{record.extra.get('region')} ({exc.response['Error'].get('Message', exc)}); "
            "check the AWS account and region (AWS_PROFILE, --sagemaker.profile)"
        ) from None


def titan_state(desc: dict[str, Any]) -> str:
    """SageMaker's status and secondary status -> one of titan's job states."""
    status, secondary = desc.get("TrainingJobStatus"), desc.get("SecondaryStatus", "")
    if status == "InProgress":
        if secondary in PENDING:
            return "PENDING"
        return "REQUEUED" if secondary in REQUEUED else "RUNNING"
    if status == "Stopped" and secondary in LIMITS:
        return "TIMEOUT"
    return {
        "Completed": "COMPLETED",
        "Failed": "FAILED",
        "Stopping": "STOPPING",
        "Stopped": "STOPPED",
    }.get(status or "", "UNKNOWN")


def checkpoint_uri(record: JobRecord, desc: dict[str, Any]) -> str:
    return desc.get("CheckpointConfig", {}).get("S3Uri") or record.extra.get(
        "checkpoint_s3_uri", ""
    )


def newest_checkpoint(record: JobRecord, uri: str, s3: Any = None) -> int | None:
    """The step of the newest complete checkpoint under S3 prefix ``uri`` (its ``.metadata``,
    written last); None if none or if S3 cannot be read (short timeouts)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not uri.startswith("s3://"):
        return None
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = s3 or client(record, "s3", quick=True)
    steps: list[int] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    try:
        for _ in range(20):  # 20 000 keys at most: a few seconds
            page = s3.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                m = re.fullmatch(r"step-(\d+)/\.metadata", obj["Key"][len(prefix) :])
                if m:
                    steps.append(int(m.group(1)))
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
    except (BotoCoreError, ClientError):
        return None
    return max(steps) if steps else None


def _continue_command(record: JobRecord, uri: str) -> str:
    config = record.extra.get("config") or os.path.join(record.dump_folder, "job_config.toml")
    return f"titan run {config} --backend sagemaker --sagemaker.checkpoint_s3_uri={uri}"


def status_of(record: JobRecord, desc: dict[str, Any], s3: Any = None) -> JobStatus:
    """The job's :class:`JobStatus`: the state and, in one line, why and what to do."""
    state = titan_state(desc)
    secondary = desc.get("SecondaryStatus", "")
    uri = checkpoint_uri(record, desc)
    if state == "FAILED":
        reason = " ".join(str(desc.get("FailureReason", "")).split())
        return JobStatus(state, reason or f"no failure reason given; see `titan logs {record.id}`")
    if state in ("STOPPED", "TIMEOUT"):
        step = newest_checkpoint(record, uri, s3)
        if step is None:
            why = "stopped" if state == "STOPPED" else f"{secondary}: stopped at its limit"
            where = f"no complete checkpoint in {uri}" if uri else "no checkpoint location"
            fix = (
                "; raise --sagemaker.max_runtime_s (or checkpoint more often) and run it again"
                if state == "TIMEOUT"
                else ""
            )
            return JobStatus(state, f"{why}; {where}{fix}")
        how = _continue_command(record, uri)
        if state == "TIMEOUT":
            limit = "max_runtime_s" if secondary == "MaxRuntimeExceeded" else "max_wait_s"
            return JobStatus(
                "RESUMABLE",
                f"{secondary} after checkpoint step {step} in {uri}; continue it (raise "
                f"--sagemaker.{limit} if needed): {how}",
            )
        return JobStatus(state, f"stopped; checkpoint step {step} in {uri}; continue it: {how}")
    if state == "REQUEUED":
        return JobStatus(
            state, f"{secondary}: spot capacity reclaimed; SageMaker restarts it from {uri}"
        )
    if state in ("PENDING", "RUNNING", "STOPPING"):
        return JobStatus(
            state, secondary if secondary and secondary != desc.get("TrainingJobStatus") else ""
        )
    return JobStatus(
        state, "" if state != "UNKNOWN" else f"SageMaker status {desc.get('TrainingJobStatus')!r}"
    )


def job_status(record: JobRecord) -> JobStatus:
    return status_of(record, describe(record, client(record, "sagemaker", quick=True)))


def stop_job(record: JobRecord, sm: Any = None) -> JobStatus:
    """StopTrainingJob for a job that has not ended; a job that has is left alone."""
    sm = sm or client(record, "sagemaker", quick=True)
    desc = describe(record, sm)
    state = titan_state(desc)
    if state in FINAL_STATES or state == "STOPPING":
        status = status_of(record, desc)
        ended = "is already stopping" if state == "STOPPING" else "had already ended"
        detail = f"{ended}; nothing to cancel" + (f" ({status.detail})" if status.detail else "")
        return JobStatus(status.state, detail)
    sm.stop_training_job(TrainingJobName=record.id)
    after = titan_state(describe(record, sm))
    uri = checkpoint_uri(record, desc)
    return JobStatus(
        after,
        f"StopTrainingJob sent; SageMaker ends it within minutes, its checkpoints stay in {uri}"
        if uri
        else "StopTrainingJob sent; SageMaker ends it within minutes",
    )


def _eta(text: str | None) -> float | None:
    if not text or text == "?":
        return None
    h, m, s = (int(x) for x in text.split(":"))
    return float(h * 3600 + m * 60 + s)


def progress_line(message: str) -> Progress | None:
    """A :class:`Progress` from one of titan's per-log-step console lines, else None."""
    m = STEP_LINE.search(message)
    if m is None:
        return None
    try:
        loss: float | None = float(m.group("loss"))
    except ValueError:
        loss = None
    try:
        tps: float | None = float(m.group("tps").replace(",", ""))
    except ValueError:
        tps = None
    return Progress(
        step=int(m.group("step")),
        total_steps=int(m.group("total")),
        loss=loss,
        tokens_per_second=tps,
        eta_seconds=_eta(m.group("eta")),
    )


def job_progress(record: JobRecord, logs: Any = None) -> Progress | None:
    """The last log step of global rank 0 (host algo-1) in the job's CloudWatch log.

    Reads the newest ``algo-1`` stream (a restarted job starts a new one) from
    its end, at most :data:`LOG_PAGES` pages; None when there is no such line
    yet or no log; CloudWatch's other errors (access, time-outs) are raised, for
    ``titan jobs`` to show in one line.
    """
    from botocore.exceptions import ClientError

    logs = logs or client(record, "logs", quick=True)
    try:
        streams = logs.describe_log_streams(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{record.id}/algo-1-"
        ).get("logStreams", [])
        if not streams:
            return None
        newest = max(
            streams,
            key=lambda s: (
                s.get("lastEventTimestamp") or s.get("creationTime") or 0,
                s["logStreamName"],
            ),
        )
        kwargs: dict[str, Any] = {
            "logGroupName": LOG_GROUP,
            "logStreamName": newest["logStreamName"],
            "startFromHead": False,
            "limit": 100,
        }
        for _ in range(LOG_PAGES):
            page = logs.get_log_events(**kwargs)
            for event in reversed(page.get("events", [])):
                found = progress_line(event.get("message", ""))
                if found is not None:
                    return found
            token = page.get("nextBackwardToken")
            if not page.get("events") or not token or token == kwargs.get("nextToken"):
                return None
            kwargs["nextToken"] = token
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None  # no container has logged yet
        raise
    return None


class _LogReader:
    """New CloudWatch events of every host's stream, in time order, across calls."""

    def __init__(self, logs: Any, job: str) -> None:
        self.logs, self.job = logs, job
        self.tokens: dict[str, str | None] = {}

    def _streams(self) -> list[str]:
        from botocore.exceptions import ClientError

        names: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job}/"}
        try:
            while True:
                page = self.logs.describe_log_streams(**kwargs)
                names += [s["logStreamName"] for s in page.get("logStreams", [])]
                if not page.get("nextToken"):
                    return sorted(names)
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return []  # no container has started yet
            raise

    def new_events(self) -> list[tuple[int, str, str]]:
        events: list[tuple[int, str, str]] = []
        for stream in self._streams():
            while True:
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "logStreamName": stream,
                    "startFromHead": True,
                }
                if self.tokens.get(stream):
                    kwargs["nextToken"] = self.tokens[stream]
                page = self.logs.get_log_events(**kwargs)
                host = stream.split("/", 1)[-1].rsplit("-", 1)[0]
                events += [(e["timestamp"], host, e["message"]) for e in page.get("events", [])]
                token = page.get("nextForwardToken")
                if not page.get("events") or token == self.tokens.get(stream):
                    self.tokens[stream] = token
                    break
                self.tokens[stream] = token
        return sorted(events, key=lambda e: e[0])


def job_logs(record: JobRecord, follow: bool, out: TextIO) -> int:
    """Write the job's CloudWatch log to ``out``; with ``follow``, until the job ends."""
    sm, reader = client(record, "sagemaker"), _LogReader(client(record, "logs"), record.id)
    poll = float(os.environ.get(POLL_ENV, "10"))
    last_state = ""
    while True:
        desc = describe(record, sm)
        state = titan_state(desc)
        for _, host, message in reader.new_events():
            out.write(f"[{host}] {message.rstrip()}\n")
        out.flush()
        if not follow:
            return 0
        if state != last_state:
            print(f"{record.id}: {state} ({desc.get('SecondaryStatus', '')})", file=sys.stderr)
            last_state = state
        if state in FINAL_STATES:
            for _, host, message in reader.new_events():  # what arrived while it ended
                out.write(f"[{host}] {message.rstrip()}\n")
            out.flush()
            if state == "COMPLETED":
                return 0
            reason = desc.get("FailureReason", "")
            print(f"{record.id} ended {state}" + (f": {reason}" if reason else ""), file=sys.stderr)
            return 1
        time.sleep(poll)
