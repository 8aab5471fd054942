"""Fixtures for the SageMaker backend tests (helpers and the no-network rules: sm_helpers.py)."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import loopback_only  # noqa: E402


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on 127.0.0.1 inside this module's private network namespace."""
    from moto.server import ThreadedMotoServer

    with loopback_only():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        # moto's state lives in this process, shared by every module's server: start clean.
        reset = f"http://{host}:{port}/moto-api/reset"
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        no_proxy.open(urllib.request.Request(reset, method="POST"), timeout=30).read()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
