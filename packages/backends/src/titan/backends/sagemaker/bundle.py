"""The training job's code channel: titan's config for the container, its entry script, titan.

SageMaker re-encodes hyperparameters (a single quote breaks the job, ``1e-3``
becomes ``0.001``), so the effective config travels as a file, byte for byte
what the ranks read. The code channel (``/opt/ml/input/data/code``) holds:

* ``job_config.toml``: the effective config with the container's paths
  (data channel, ``/opt/ml/checkpoints``, ``/opt/ml/output/tensorboard``);
* the tokenizer file or folder of ``model.tokenizer_path``, when it is on this
  machine (``tokenizer/``); the container's config points at it;
* ``titan_sagemaker_entry.py``: the script the SDK's torchrun driver starts on
  every rank;
* ``wheels/`` and ``requirements.txt`` (when titan is installed at start):
  wheels of the titan distributions this job uses, repacked from this
  environment, so the container runs the same titan as the laptop, local
  edits included; and every other package at the version of the
  repository's ``uv.lock``, with its hashes
  (:mod:`titan.backends.sagemaker.requirements`).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import zipfile
from pathlib import Path

from titan.backends.sagemaker.channels import PREFIX
from titan.core.launch import CONFIG_FILE_NAME, PreparedJob

ENTRY_SCRIPT = "titan_sagemaker_entry.py"
TOKENIZER_DIR = "tokenizer"
REQUIREMENTS = "requirements.txt"
WHEELS = "wheels"

# Where SageMaker puts things in the container (fixed by the service and its SDK drivers).
SM_ROOT = "/opt/ml"
SM_CHECKPOINTS = f"{SM_ROOT}/checkpoints"
SM_TENSORBOARD = f"{SM_ROOT}/output/tensorboard"
SM_OUTPUT_DATA = f"{SM_ROOT}/output/data"
SM_MODEL = f"{SM_ROOT}/model"
SM_CODE = f"{SM_ROOT}/input/data/code"

ENTRY_SOURCE = '''"""Written by titan: every rank of the SageMaker training job starts here (torchrun)."""

import sys
from pathlib import Path

from titan.backends.sagemaker.container import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent / "job_config.toml"))
'''


def container_job(job: PreparedJob, input_channel: str | None, tensorboard: bool) -> PreparedJob:
    """A copy of ``job`` whose paths are the container's; the user's job is left untouched.

    Checkpointing is always on: a spot interruption or a restarted job then
    resumes from ``/opt/ml/checkpoints``, which SageMaker syncs with S3.
    """
    config = copy.deepcopy(job.config)
    config.job.dump_folder = SM_OUTPUT_DATA  # metrics.jsonl etc. -> output.tar.gz
    config.checkpoint.enable_checkpoint = True
    config.checkpoint.folder = SM_CHECKPOINTS
    if tensorboard:
        config.metrics.enable_tensorboard = True
        config.metrics.save_tb_folder = SM_TENSORBOARD
    if input_channel:
        config.training.dataset_path = f"{PREFIX}{input_channel}"
    tokenizer = local_tokenizer(job)
    if tokenizer is not None:
        config.model.tokenizer_path = f"{SM_CODE}/{TOKENIZER_DIR}/{tokenizer.name}"
    return dataclasses.replace(job, config=config)


def local_tokenizer(job: PreparedJob) -> Path | None:
    """``model.tokenizer_path`` if it is a file or folder on this machine (it travels along)."""
    path = job.config.model.tokenizer_path
    if not path or "://" in path:
        return None
    p = Path(path).expanduser()
    return p if p.exists() else None


def write_code_dir(
    job: PreparedJob, code_dir: Path, input_channel: str | None, tensorboard: bool, install: bool
) -> list[str]:
    """Fill ``code_dir`` (the code channel); returns the names of the wheels it holds."""
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / CONFIG_FILE_NAME).write_text(
        container_job(job, input_channel, tensorboard).effective_toml()
    )
    (code_dir / ENTRY_SCRIPT).write_text(ENTRY_SOURCE)
    tokenizer = local_tokenizer(job)
    if tokenizer is not None:
        dest = code_dir / TOKENIZER_DIR / tokenizer.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if tokenizer.is_dir():
            shutil.copytree(tokenizer, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(tokenizer, dest)
    if not install:
        return []
    from titan.backends.sagemaker.requirements import (
        check_pinned,
        job_requirements,
        requirements_file,
    )

    active = set(job.plugins.active)
    reqs = job_requirements(job.config.sagemaker.py_version, active)
    dists = titan_distributions(active)
    check_pinned(dists, reqs, job.config.sagemaker.py_version)
    wheels = [build_wheel(dist, code_dir / WHEELS) for dist in dists]
    (code_dir / REQUIREMENTS).write_text(requirements_file(reqs, wheels))
    return [w.name for w in wheels]


# --- wheels of the titan distributions in use ----------------------------------


TITAN_OWN = ("titan-core", "titan-models", "titan-optims", "titan-backends")
"""The distributions of titan's own workspace (the example plugins are not among them)."""


def titan_distributions(
    active: set[str], base: tuple[str, ...] = ("titan-core", "titan-backends")
) -> list[md.Distribution]:
    """``base`` (titan-core, titan-backends), and every distribution that provides an
    active plugin."""
    wanted = set(base)
    for ep in md.entry_points(group="titan.plugins"):
        if ep.name in active and ep.dist is not None:
            wanted.add(_normal(ep.dist.metadata["Name"]))
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        name = _normal(dist.metadata["Name"] or "")
        if name in wanted and name not in found:
            found[name] = dist
    return [found[n] for n in sorted(found)]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _source_files(dist: md.Distribution) -> list[tuple[str, Path]]:
    """(path in the wheel, file here) of a distribution's importable files.

    An editable install (``uv sync``, ``pip install -e``) lists only a ``.pth``
    file naming its source folders; those folders are shipped instead.
    """
    out: list[tuple[str, Path]] = []
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if str(f).endswith(".pth"):
            for line in Path(dist.locate_file(f)).read_text().splitlines():
                root = Path(line.strip())
                if line.strip() and not line.startswith(("import ", "#")) and root.is_dir():
                    out += [
                        (p.relative_to(root).as_posix(), p)
                        for p in sorted(root.rglob("*"))
                        if p.is_file() and _shippable(p.relative_to(root).parts)
                    ]
        elif (
            parts and parts[0] != ".." and not parts[0].endswith(".dist-info") and _shippable(parts)
        ):
            out.append((Path(str(f)).as_posix(), Path(dist.locate_file(f))))
    return out


def _shippable(parts: tuple[str, ...]) -> bool:
    return "__pycache__" not in parts and not parts[-1].endswith((".pyc", ".pyo"))


def build_wheel(dist: md.Distribution, out_dir: Path) -> Path:
    """Write a pure-Python wheel of an installed distribution (metadata, entry points, files)."""
    name = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    version = dist.version
    info = f"{name}-{version}.dist-info"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{version}-py3-none-any.whl"
    members: list[tuple[str, bytes]] = [(arc, src.read_bytes()) for arc, src in _source_files(dist)]
    members.append((f"{info}/METADATA", (dist.read_text("METADATA") or "").encode()))
    if dist.read_text("entry_points.txt"):
        members.append((f"{info}/entry_points.txt", dist.read_text("entry_points.txt").encode()))
    members.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: titan\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    record = [f"{arc},sha256={_digest(data)},{len(data)}" for arc, data in members]
    record.append(f"{info}/RECORD,,")
    members.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in members:
            zinfo = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
            zinfo.external_attr = 0o644 << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zinfo, data)
    os.replace(tmp, path)
    return path


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
