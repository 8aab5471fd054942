"""``titan jobs`` / ``logs`` / ``cancel`` for SageMaker training jobs (boto3 only, no SDK objects).

State comes from DescribeTrainingJob, logs from CloudWatch Logs (group
``/aws/sagemaker/TrainingJobs``, one stream per host: ``<job>/algo-N-<epoch>``),
cancel is StopTrainingJob. The record's ``extra`` holds the region and profile
the job was created with.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from titan.core.errors import ConfigError
from titan.core.jobs import FINAL_STATES, JobRecord

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


def client(record: JobRecord, service: str) -> Any:
    import boto3

    session = boto3.Session(
        profile_name=record.extra.get("profile") or None, region_name=record.extra.get("region")
    )
    return session.client(service)


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
    if status == "Stopped" and secondary in ("MaxRuntimeExceeded", "MaxWaitTimeExceeded"):
        return "TIMEOUT"
    return {
        "Completed": "COMPLETED",
        "Failed": "FAILED",
        "Stopping": "STOPPING",
        "Stopped": "STOPPED",
    }.get(status or "", "UNKNOWN")


def job_state(record: JobRecord) -> str:
    return titan_state(describe(record))


def stop_job(record: JobRecord, sm: Any = None) -> None:
    sm = sm or client(record, "sagemaker")
    state = titan_state(describe(record, sm))
    if state in FINAL_STATES:
        raise ConfigError(f"job '{record.id}' has already ended ({state}); nothing to cancel")
    sm.stop_training_job(TrainingJobName=record.id)


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
