"""`titan sagemaker dockerfile` and the titan wheels a job without titan in its image installs."""

from __future__ import annotations

import importlib.metadata as md
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import aws_env, loopback_only, titan  # noqa: E402


def test_dockerfile_extends_the_aws_image_with_the_locked_versions_and_titan(tmp_path):
    out = tmp_path / "image"
    with loopback_only():  # the image lookup is offline
        proc = titan("sagemaker", "dockerfile", "--output", str(out), env=aws_env(None, tmp_path))
    assert proc.returncode == 0, proc.stderr
    text = (out / "Dockerfile").read_text()
    assert (
        "FROM 763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.10-gpu-py313" in text
    )
    for name in ("torch", "torchao", "torchdata"):
        assert f"{name}=={md.version(name)}" in text
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl"))
    assert {w.split("-")[0] for w in wheels} >= {"titan_core", "titan_backends", "titan_models"}
    for w in wheels:
        assert f"/tmp/titan-wheels/{w}" in text


def test_repacked_wheels_install_with_entry_points_and_sources(tmp_path):
    """The wheels pip installs in the container: real wheels, plugins registered, code inside."""
    out = tmp_path / "image"
    proc = titan("sagemaker", "dockerfile", "--output", str(out), env=aws_env(None, tmp_path))
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    for wheel in (out / "wheels").glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
            zf.extractall(site)
    dists = {d.metadata["Name"]: d for d in md.distributions(path=[str(site)])}
    plugins = {ep.name: ep.value for d in dists.values() for ep in d.entry_points}
    assert plugins["sagemaker"] == "titan.backends.sagemaker"
    assert plugins["local"] == "titan.backends.local"
    assert (site / "titan" / "backends" / "sagemaker" / "container.py").is_file()
    assert (site / "titan" / "core" / "cli.py").is_file()
    assert not list(site.rglob("__pycache__"))
    assert "torch" in " ".join(dists["titan-core"].requires or [])
