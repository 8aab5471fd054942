"""AWS credentials: missing, unknown, expired or rejected ones are one line, exit 2, nothing left.

A real launch resolves the session's credentials (and asks STS whose they are)
before it writes the code channel; a dry run needs none but refuses a profile
that does not exist. Nothing new may stay in the dump folder, in S3 or in
SageMaker when the launch is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import one_line_refusal  # noqa: E402
from sm_helpers import (  # noqa: E402
    BUCKET,
    REGION,
    ROLE,
    aws_env,
    client,
    loopback_only,
    s3_objects,
    titan,
)

LAUNCH = ["run", "--backend", "sagemaker", f"--sagemaker.role={ROLE}"]
FIXES = ("aws configure", "AWS_PROFILE", "--sagemaker.profile")


@pytest.fixture(scope="module")
def bucket(moto_url: str) -> None:
    client("s3", moto_url).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    } | {str(p.relative_to(folder)) + "/": b"" for p in folder.rglob("*") if p.is_dir()}


def refused(proc, *needles: str) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    return one_line_refusal(proc, *needles)


def launch_refused(moto_url: str, tmp_path: Path, env: dict, *extra: str) -> str:
    """Launch into a dump folder that holds an earlier launch; check nothing changed anywhere."""
    dump = tmp_path / "run"
    (dump / "sagemaker_code").mkdir(parents=True)
    (dump / "sagemaker_code" / "job_config.toml").write_text("# an earlier launch's\n")
    (dump / "job_config.toml").write_text("# an earlier launch's\n")
    before = files(dump)
    s3_before = s3_objects(moto_url, f"s3://{BUCKET}/")
    jobs_before = client("sagemaker", moto_url).list_training_jobs()["TrainingJobSummaries"]
    proc = titan(*LAUNCH, f"--job.dump_folder={dump}", *extra, env=env)
    line = refused(proc)
    assert files(dump) == before  # no sagemaker_code/ of this launch, no new file
    assert s3_objects(moto_url, f"s3://{BUCKET}/") == s3_before  # nothing uploaded
    assert client("sagemaker", moto_url).list_training_jobs()["TrainingJobSummaries"] == (
        jobs_before
    )
    assert not (Path(env["TITAN_HOME"]) / "jobs").exists()  # no job record
    # A fresh dump folder is not even created.
    fresh = tmp_path / "fresh"
    refused(titan(*LAUNCH, f"--job.dump_folder={fresh}", *extra, env=env))
    assert not fresh.exists()
    return line


def test_no_credentials_is_one_line_and_leaves_nothing(moto_url, bucket, tmp_path):
    env = aws_env(moto_url, tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    line = launch_refused(moto_url, tmp_path, env)
    assert "no AWS credentials found" in line
    for fix in FIXES:
        assert fix in line
    guide = Path(__file__).resolve().parents[3] / "docs" / "sagemaker.md"
    assert line in guide.read_text()  # the guide shows the very line


def test_an_unknown_profile_is_one_line_and_leaves_nothing(moto_url, bucket, tmp_path):
    aws = tmp_path / ".aws"  # HOME is tmp_path: a config with one other profile
    aws.mkdir()
    (aws / "config").write_text("[profile research]\nregion = us-west-2\n")
    env = aws_env(moto_url, tmp_path)
    line = launch_refused(moto_url, tmp_path, env, "--sagemaker.profile=nope")
    assert "AWS profile 'nope' (--sagemaker.profile)" in line
    assert "research" in line and "aws configure --profile nope" in line and "AWS_PROFILE" in line
    # The same with AWS_PROFILE.
    line = refused(
        titan(
            *LAUNCH, f"--job.dump_folder={tmp_path / 'other'}", env={**env, "AWS_PROFILE": "nope"}
        )
    )
    assert "AWS profile 'nope' (AWS_PROFILE)" in line
    assert not (tmp_path / "other").exists()


def test_the_dry_run_refuses_an_unknown_profile_offline(tmp_path):
    env = aws_env(None, tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    with loopback_only():
        proc = titan(
            *LAUNCH,
            "--dry-run",
            "--sagemaker.profile=nope",
            f"--job.dump_folder={tmp_path / 'run'}",
            env=env,
        )
        refused(proc, "AWS profile 'nope'", "aws configure --profile nope")
        # Without a profile the dry run needs no credentials at all.
        proc = titan(*LAUNCH, "--dry-run", f"--job.dump_folder={tmp_path / 'run'}", env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "run").exists()


def _sts_answers(code: str, message: str):
    """A boto3 session whose STS GetCallerIdentity fails as AWS does with ``code``."""
    import boto3
    from botocore.awsrequest import AWSResponse

    session = boto3.Session(
        aws_access_key_id="AKIAEXPIREDKEY000001",
        aws_secret_access_key="expired",
        aws_session_token="expired-token",
        region_name=REGION,
    )

    def answer(**_):
        error = {"Error": {"Code": code, "Message": message, "Type": "Sender"}}
        return AWSResponse("https://sts.invalid", 403, {}, None), error

    session.events.register("before-call.sts.GetCallerIdentity", answer)
    return session


@pytest.mark.parametrize(
    ("code", "message", "needle"),
    [
        ("ExpiredToken", "The security token included in the request is expired", "expired"),
        (
            "InvalidClientTokenId",
            "The security token included in the request is invalid",
            "rejected",
        ),
        ("SignatureDoesNotMatch", "The request signature we calculated does not match", "rejected"),
    ],
)
def test_expired_or_rejected_credentials_are_one_line(code, message, needle, monkeypatch):
    from titan.backends.sagemaker import credentials
    from titan.backends.sagemaker.request import plan
    from titan.core.errors import TitanError
    from titan.core.launch import prepare_job

    job = prepare_job(
        None, overrides=[("sagemaker.role", ROLE), ("sagemaker.region", REGION)], validate=False
    )
    monkeypatch.setattr(
        credentials, "session", lambda sec, region=None: _sts_answers(code, message)
    )
    monkeypatch.setattr(credentials, "_checked", set())
    with pytest.raises(TitanError) as err:
        credentials.check_credentials(job.config.sagemaker, plan(job, image_lookup=False).region)
    text = str(err.value)
    assert "\n" not in text and err.value.exit_code == 2
    assert needle in text and code in text
    assert "aws configure" in text and "AWS_PROFILE" in text and "--sagemaker.profile" in text


def test_a_refusal_while_creating_the_job_is_one_line_and_leaves_nothing(monkeypatch, tmp_path):
    """AWS refuses late (a quota at CreateTrainingJob, expired keys at the upload): one line,
    and the dump folder (an earlier launch's code included) is as it was."""
    from botocore.exceptions import ClientError

    from titan.backends.sagemaker import launch as sm_launch
    from titan.core.errors import TitanError
    from titan.core.launch import prepare_job

    dump = tmp_path / "run"
    (dump / "sagemaker_code").mkdir(parents=True)
    (dump / "sagemaker_code" / "job_config.toml").write_text("# an earlier launch's\n")
    before = files(dump)
    job = prepare_job(
        None,
        overrides=[
            ("sagemaker.role", ROLE),
            ("sagemaker.region", REGION),
            ("job.dump_folder", str(dump)),
        ],
        validate=False,
    )
    monkeypatch.setattr(sm_launch, "check_credentials", lambda sec, region: None)
    for code, message, needle in [
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.p5.48xlarge for training job usage' is 0",
            "AWS refused CreateTrainingJob: ResourceLimitExceeded",
        ),
        ("ExpiredToken", "The provided token has expired.", "have expired"),
    ]:

        def refuse(*_, code=code, message=message, **__):
            raise ClientError({"Error": {"Code": code, "Message": message}}, "CreateTrainingJob")

        monkeypatch.setattr(sm_launch, "build_request", refuse)
        with pytest.raises(TitanError) as err:
            sm_launch.launch(job, dry_run=False)
        assert needle in str(err.value) and "\n" not in str(err.value)
        assert files(dump) == before
