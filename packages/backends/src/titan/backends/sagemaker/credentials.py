"""AWS credentials for titan's own calls: found before anything is written or uploaded.

``titan run --backend sagemaker`` resolves the session's credentials (the
profile of ``--sagemaker.profile`` or ``AWS_PROFILE``, else the default
chain: environment, ``~/.aws``, SSO, the instance's role) before it writes the
code channel, and asks STS who they belong to (GetCallerIdentity, allowed to
every principal), so that missing, unknown, expired or rejected credentials
are one line naming the fix, exit code 2, with nothing left behind. A dry run
needs no credentials, but an unknown profile is known offline and refused
there too. Errors of botocore met later (while uploading or creating the
job) are turned into the same lines by :func:`aws_error`.
"""

from __future__ import annotations

import os
from typing import Any

from titan.core.errors import ConfigError, TitanError

FIX = (
    "run `aws configure` (or `aws sso login` for an SSO profile), set AWS_PROFILE to a "
    "configured profile, or pass --sagemaker.profile=NAME"
)
EXPIRED = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "TokenRefreshRequired",
}
REJECTED = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "AuthFailure",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}


_checked: set[tuple[str, str, str]] = set()


class AwsError(TitanError):
    """AWS refused a call titan made for the user (credentials, permissions, quotas)."""


def _whose(sec: Any) -> str:
    if sec.profile:
        return f"profile '{sec.profile}' (--sagemaker.profile)"
    if os.environ.get("AWS_PROFILE"):
        return f"profile '{os.environ['AWS_PROFILE']}' (AWS_PROFILE)"
    return "the default credential chain (environment, ~/.aws, SSO, instance role)"


def session(sec: Any, region: str | None = None) -> Any:
    """``boto3.Session`` of ``[sagemaker] profile``; an unknown profile is one line (offline)."""
    try:
        import boto3
        from botocore.exceptions import ProfileNotFound
    except ImportError:
        from titan.backends.sagemaker import INSTALL_HINT

        raise ConfigError(
            f"--backend sagemaker needs the SageMaker Python SDK 3.x: {INSTALL_HINT}"
        ) from None

    try:
        s = boto3.Session(profile_name=sec.profile or None, region_name=region)
    except ProfileNotFound as exc:
        raise ConfigError(_unknown_profile(sec, exc)) from None
    return s


def check_profile(sec: Any) -> None:
    """Refuse a profile that does not exist (no network: ~/.aws/config and credentials)."""
    if sec.profile or os.environ.get("AWS_PROFILE"):
        session(sec)


def _unknown_profile(sec: Any, exc: Exception) -> str:
    import botocore.session

    name = sec.profile or os.environ.get("AWS_PROFILE", "")
    option = "--sagemaker.profile" if sec.profile else "AWS_PROFILE"
    try:
        known = sorted(botocore.session.Session().full_config.get("profiles", {}))
    except Exception:  # a damaged ~/.aws/config: the message still names the fix
        known = []
    listed = f"the profiles there: {', '.join(known)}" if known else "none is configured"
    return (
        f"AWS profile '{name}' ({option}) is not in ~/.aws/config or ~/.aws/credentials "
        f"({listed}); pass a configured one with --sagemaker.profile=NAME or AWS_PROFILE, or "
        f"create it with `aws configure --profile {name}`"
    )


def check_credentials(sec: Any, region: str) -> Any:
    """The session titan launches with, its credentials resolved and accepted by AWS.

    Resolving is local (environment, files; an SSO or assume-role profile asks
    its own service); STS GetCallerIdentity then finds expired or rejected
    keys before anything is written. If STS cannot be reached (a VPC without
    its endpoint), the launch goes on and meets the same errors later.
    """
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    s = session(sec, region)
    key = (sec.profile, os.environ.get("AWS_PROFILE", ""), region)
    if key in _checked:  # once per launch: layout() checks, launch() makes sure
        return s
    try:
        creds = s.get_credentials()
        if creds is None:
            raise NoCredentialsError()
        creds.get_frozen_credentials()  # an SSO / assume-role profile fetches them here
        sts = s.client(
            "sts",
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}),
        )
        sts.get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        error = aws_error(sec, exc)
        if error is not None:
            raise error from None
        # Not about the credentials (STS unreachable from here, a time-out, another
        # refusal): the launch goes on, and the call that matters says what is wrong.
        return s
    _checked.add(key)
    return s


def aws_error(sec: Any, exc: Exception) -> TitanError | None:
    """One line for a botocore error about the credentials, or None if it is not one."""
    from botocore.exceptions import (
        ClientError,
        CredentialRetrievalError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    whose = _whose(sec)
    if isinstance(exc, ProfileNotFound):
        return ConfigError(_unknown_profile(sec, exc))
    if isinstance(exc, NoCredentialsError):
        return AwsError(f"no AWS credentials found in {whose}; {FIX}")
    if isinstance(exc, PartialCredentialsError):
        return AwsError(f"the AWS credentials of {whose} are incomplete ({exc}); {FIX}")
    name = type(exc).__name__
    if isinstance(exc, CredentialRetrievalError) or name in (
        "TokenRetrievalError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "InvalidConfigError",
    ):
        return AwsError(
            f"the AWS credentials of {whose} could not be loaded ({_first_line(exc)}); "
            f"log in again (`aws sso login`) or {FIX}"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        if code in EXPIRED:
            return AwsError(
                f"the AWS credentials of {whose} have expired ({code}: {message}); refresh "
                f"them (`aws sso login`, or new keys with `aws configure`), or {FIX}"
            )
        if code in REJECTED:
            return AwsError(f"AWS rejected the credentials of {whose} ({code}: {message}); {FIX}")
    return None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
