"""Shared test setup: keep CPU runs quiet and bounded on the 2-core CI machine."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Job records (`titan jobs`) of test runs go to a throw-away folder, never ~/.titan.
os.environ.setdefault("TITAN_HOME", tempfile.mkdtemp(prefix="titan-home-"))
