"""``titan sagemaker dockerfile``: an image with titan inside, for ``--sagemaker.image_uri``.

The base is the AWS PyTorch training image (EFA, libfabric, the aws-ofi-nccl
plugin and SageMaker's training toolkit are already there), by default the
one whose PyTorch is the lock's major.minor when AWS has it, else the newest
the SageMaker SDK's table knows. On top of it, ``requirements.txt`` installs
every package at the version of the repository's ``uv.lock``, with the lock's
hashes (:mod:`titan.backends.sagemaker.requirements`): the lock's torch is
PyPI's CUDA build, which brings its CUDA libraries as ``nvidia-*`` wheels, so
the image runs the lock's torch whatever CUDA the base was built with. Then
wheels of titan's own distributions (core, models, optims, backends; not the
example plugins), repacked from this environment. Jobs then start without
installing anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

sagemaker_app = typer.Typer(
    help="SageMaker helpers (image for --backend sagemaker).", no_args_is_help=True
)

AWS_ACCOUNT = "763104351884"
"""The account of the AWS Deep Learning Containers registry (most regions)."""


def registry_of(image: str) -> str:
    return image.split("/", 1)[0]


def login_command(image: str, region: str) -> str:
    """The registry login ``docker build`` needs to pull an AWS base image."""
    return (
        f"aws ecr get-login-password --region {region} | docker login --username AWS "
        f"--password-stdin {registry_of(image)}"
    )


def dockerfile_text(
    base_image: str, region: str, image_torch: str, pins: dict[str, str], source: str
) -> str:
    versions = ", ".join(f"{n} {pins[n]}" for n in ("torch", "torchao", "torchdata") if n in pins)
    origin = "the lock" if source != "installed" else "the environment that wrote this file"
    return f"""# Written by `titan sagemaker dockerfile`. Log in to the AWS registry, build, push, run:
#   {login_command(base_image, region)}
#   docker build -t titan <this folder>
#   (tag and push it to an ECR repository of yours, then)
#   titan run ... --backend sagemaker --sagemaker.image_uri=<account>.dkr.ecr.<region>.amazonaws.com/titan:latest
#
# Base: the AWS PyTorch {image_torch} training image (EFA, NCCL's aws-ofi plugin, SageMaker's
# toolkit). requirements.txt holds every package at the version of {origin} ({versions};
# PyPI's CUDA build of torch, which brings its CUDA libraries as wheels), then titan's wheels.
FROM {base_image}

COPY requirements.txt /tmp/titan/requirements.txt
COPY wheels/ /tmp/titan/wheels/
RUN cd /tmp/titan && pip install --no-cache-dir -r requirements.txt && rm -rf /tmp/titan

# Quiet OpenMP spinning next to the GPU ranks; unbuffered rank output for CloudWatch.
ENV OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
"""


def base_image(region: str, pytorch_version: str, py_version: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        "pytorch",
        region=region,
        version=pytorch_version,
        py_version=py_version,
        instance_type=instance_type,
        image_scope="training",
    )


def choose_base(
    region: str, pytorch_version: str, py_version: str, instance_type: str, torch: str | None
) -> tuple[str, str]:
    """(image URI, its PyTorch version): ``pytorch_version`` if given, else the lock's
    major.minor when AWS has that image, else the section's default."""
    from titan.backends.sagemaker import SageMakerSection
    from titan.core.errors import ConfigError

    if pytorch_version:
        candidates = [pytorch_version]
    else:
        candidates = [".".join(torch.split("+")[0].split(".")[:2])] if torch else []
        candidates.append(SageMakerSection.pytorch_version)
    for version in candidates:
        try:
            return base_image(region, version, py_version, instance_type), version
        except ValueError as exc:
            last = exc
    raise ConfigError(
        f"no AWS PyTorch training image {candidates[-1]}/{py_version} in {region} "
        f"({str(last).splitlines()[0]}); pass --pytorch-version / --py-version"
    )


@sagemaker_app.command("dockerfile")
def dockerfile(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Folder for the Dockerfile, wheels/ and requirements.txt."
        ),
    ] = Path("titan-image"),
    region: Annotated[str, typer.Option(help="Region of the AWS base image.")] = "us-east-1",
    pytorch_version: Annotated[
        str,
        typer.Option(help="AWS PyTorch image version; default: the lock's torch if AWS has it."),
    ] = "",
    py_version: Annotated[str, typer.Option(help="Python of the AWS image.")] = "py313",
    instance_type: Annotated[str, typer.Option(help="GPU image for this type.")] = "ml.p5.48xlarge",
    plugins: Annotated[
        str,
        typer.Option(
            "--plugins",
            help="Also ship the distributions of these installed plugins (a,b); titan's own "
            "packages are always in.",
        ),
    ] = "",
) -> None:
    """Write DIR/Dockerfile (AWS PyTorch training image + the lock's packages + titan)."""
    from titan.backends.sagemaker.bundle import TITAN_OWN, build_wheel, titan_distributions
    from titan.backends.sagemaker.requirements import (
        check_pinned,
        job_requirements,
        requirements_file,
    )

    extra = {p.strip() for p in plugins.split(",") if p.strip()}
    dists = titan_distributions(extra, base=TITAN_OWN)
    reqs = job_requirements(py_version, extra)
    check_pinned(dists, reqs, py_version)
    base, image_torch = choose_base(
        region, pytorch_version, py_version, instance_type, reqs.pins.get("torch")
    )
    output.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(output / "wheels", ignore_errors=True)  # an earlier run's wheels must not stay
    wheels = [build_wheel(d, output / "wheels") for d in dists]
    (output / "requirements.txt").write_text(requirements_file(reqs, wheels))
    (output / "Dockerfile").write_text(
        dockerfile_text(base, region, image_torch, reqs.pins, reqs.source)
    )
    if reqs.note:
        typer.echo(f"note: {reqs.note}", err=True)
    typer.echo(
        f"wrote {output / 'Dockerfile'} (FROM {base}), requirements.txt and {len(wheels)} wheels"
    )
    typer.echo(f"log in: {login_command(base, region)}")
    typer.echo(f"build:  docker build -t titan {output}")
