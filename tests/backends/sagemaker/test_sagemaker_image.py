"""`titan sagemaker dockerfile` and the titan wheels a job without titan in its image installs."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sm_helpers import ROLE, aws_env, lock_packages, loopback_only, titan  # noqa: E402


def lock_versions() -> dict[str, list[str]]:
    """name -> the uv.lock versions of that name."""
    return {name: [p["version"] for p in ps] for name, ps in lock_packages().items()}


def test_dockerfile_installs_the_lock_on_the_aws_image_and_ships_titan_only(tmp_path):
    out = tmp_path / "image"
    with loopback_only():  # the image lookup is offline
        proc = titan("sagemaker", "dockerfile", "--output", str(out), env=aws_env(None, tmp_path))
    assert proc.returncode == 0, proc.stderr
    text = (out / "Dockerfile").read_text()
    from sagemaker.core import image_uris

    (torch,) = lock_versions()["torch"]
    try:  # the AWS image of the lock's torch when AWS has one, else the newest the SDK knows
        image_uris.retrieve(
            "pytorch",
            region="us-east-1",
            version=".".join(torch.split(".")[:2]),
            py_version="py313",
            instance_type="ml.p5.48xlarge",
            image_scope="training",
        )
        version = ".".join(torch.split(".")[:2])
    except ValueError:
        version = "2.10"
    base = f"763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:{version}-gpu-py313"
    assert f"FROM {base}" in text
    login = (
        "aws ecr get-login-password --region us-east-1 | docker login --username AWS "
        "--password-stdin 763104351884.dkr.ecr.us-east-1.amazonaws.com"
    )
    assert login in text and login in proc.stdout
    assert "pip install --no-cache-dir -r requirements.txt" in text
    # The lock's versions, with hashes, then titan's own wheels (not the example plugins').
    requirements = (out / "requirements.txt").read_text()
    lock = lock_versions()
    for name in ("torch", "torchao", "torchdata", "datasets", "pluggy"):
        (version,) = lock[name]
        assert f"\n{name}=={version}" in requirements, name
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl"))
    assert {w.split("-")[0] for w in wheels} == {
        "titan_core",
        "titan_backends",
        "titan_models",
        "titan_optims",
    }
    for w in wheels:
        digest = hashlib.sha256((out / "wheels" / w).read_bytes()).hexdigest()
        assert f"./wheels/{w} --hash=sha256:{digest}\n" in requirements


def test_without_uv_the_installed_versions_are_pinned_and_a_note_says_so(monkeypatch, tmp_path):
    """titan installed from a wheel: no lock, no uv; the job pins this environment's versions."""
    from titan.backends.sagemaker import SageMakerBackend, requirements
    from titan.backends.sagemaker.bundle import write_code_dir
    from titan.core.launch import prepare_job

    monkeypatch.setattr(requirements, "uv_binary", lambda: None)
    job = prepare_job(
        None,
        overrides=[("sagemaker.role", ROLE), ("sagemaker.region", "us-west-2")],
        validate=False,
    )
    notes = " ".join(SageMakerBackend().layout(job, offline=True).notes)
    assert "no `uv` on PATH" in notes and "installed in this environment" in notes
    public = md.version("torch").split("+")[0]
    assert f"torch {public}" in notes
    write_code_dir(job, tmp_path, None, True, install=True)
    text = (tmp_path / "requirements.txt").read_text()
    # What titan-core and titan-models need (this job uses no plugin of titan-optims).
    for name in ("torch", "torchdata", "datasets", "pluggy", "tokenizers", "safetensors"):
        assert f"\n{name}=={md.version(name).split('+')[0]}\n" in text, name
    assert "--hash" not in text  # versions of this environment, not the lock's hashes
    assert "titan-core==" not in text  # titan travels as wheels
    assert [ln for ln in text.splitlines() if ln.startswith("./wheels/")]


def test_a_cpu_torch_for_linux_in_the_lock_is_refused(monkeypatch, tmp_path):
    from titan.backends.sagemaker import requirements
    from titan.core.errors import ConfigError

    fake = tmp_path / "uv"
    fake.write_text(
        '#!/bin/sh\nprintf \'torch==2.15.0+cpu ; sys_platform == "linux"\\n'
        '    --hash=sha256:00\\ntorch==2.15.0 ; sys_platform == "darwin"\\n\'\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(requirements, "uv_binary", lambda: str(fake))
    with pytest.raises(ConfigError) as err:
        requirements.job_requirements("py313", set())
    assert "CPU build (2.15.0+cpu)" in str(err.value)
    # On macOS the same lock's torch is the plain one: the markers decide.
    pins = requirements.container_pins(
        'torch==2.15.0+cpu ; sys_platform == "linux"\ntorch==2.15.0 ; sys_platform == "darwin"\n',
        {**requirements.container_environment("py313"), "sys_platform": "darwin"},
    )
    assert pins == {"torch": "2.15.0"}


def test_repacked_wheels_install_with_entry_points_and_sources(tmp_path):
    """The wheels pip installs in the container: real wheels, plugins registered, code inside.

    pip itself installs them (``--no-deps --no-index --target``: their own files, nothing
    from an index), so a wheel pip would refuse (a bad RECORD, a wrong tag) fails here.
    The whole install-at-start path, dependencies and all, runs in
    test_sagemaker_container.py.
    """
    out = tmp_path / "image"
    proc = titan("sagemaker", "dockerfile", "--output", str(out), env=aws_env(None, tmp_path))
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "site"
    wheels = sorted((out / "wheels").glob("*.whl"))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
            assert not [n for n in zf.namelist() if "__pycache__" in n or n.endswith(".pyc")]
    # The base interpreter's pip: the test venv (uv's) has none.
    pip = [sys._base_executable, "-m", "pip", "install", "--no-deps", "--no-index"]
    proc = subprocess.run(
        [*pip, "--target", str(site), *map(str, wheels)],
        capture_output=True,
        text=True,
        timeout=300,
        env={  # no pip configuration of this machine's (a find-links folder, an index)
            **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))},
            "HOME": str(tmp_path),
            "PIP_NO_INPUT": "1",
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Successfully installed" in proc.stdout
    dists = {d.metadata["Name"]: d for d in md.distributions(path=[str(site)])}
    plugins = {ep.name: ep.value for d in dists.values() for ep in d.entry_points}
    assert plugins["sagemaker"] == "titan.backends.sagemaker"
    assert plugins["local"] == "titan.backends.local"
    assert (site / "titan" / "backends" / "sagemaker" / "container.py").is_file()
    assert (site / "titan" / "core" / "cli.py").is_file()
    assert "torch" in " ".join(dists["titan-core"].requires or [])
