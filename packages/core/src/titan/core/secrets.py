"""Secrets stay in the environment: never in job_config.toml, metrics, checkpoints or logs.

Tokens and keys (Hugging Face, AWS, Weights & Biases...) are read by the
libraries that need them from the environment; titan never copies the
environment into anything it writes. As a second line of defence, text
titan writes from user-controlled values (the effective config, a rank's
error line) passes through :func:`redact`, which replaces the value of any
secret variable set in the environment by ``<redacted:NAME>``; so a token
pasted into ``--job.description`` or echoed in a library's error message is
not written out.
"""

from __future__ import annotations

import os
import re

# Variables whose values are secrets, by exact name or by pattern.
SECRET_NAMES = frozenset(
    {
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "WANDB_API_KEY",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
    }
)
SECRET_PATTERN = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY)", re.IGNORECASE)
MIN_LENGTH = 8  # shorter values ("1", "true") would redact ordinary text


def secret_values(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``{value: NAME}`` of the secrets set in ``environ`` (default: this process's)."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for name, value in env.items():
        if (name in SECRET_NAMES or SECRET_PATTERN.search(name)) and len(value) >= MIN_LENGTH:
            found[value] = name
    return found


def redact(text: str) -> str:
    """``text`` with every secret value from the environment replaced by ``<redacted:NAME>``."""
    for value, name in sorted(secret_values().items(), key=lambda kv: -len(kv[0])):
        text = text.replace(value, f"<redacted:{name}>")
    return text
