"""``titan sagemaker dockerfile``: an image with titan inside, for ``--sagemaker.image_uri``.

It extends the AWS PyTorch training image (EFA, NCCL, the OFI plugin and the
SageMaker toolkit are already there) with the exact torch, torchao and
torchdata versions of this environment (the lock's) and wheels of the titan
distributions installed here, so jobs start without a pip install.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from typing import Annotated

import typer

sagemaker_app = typer.Typer(
    help="SageMaker helpers (image for --backend sagemaker).", no_args_is_help=True
)

PINNED = ("torch", "torchao", "torchdata")


def dockerfile_text(base_image: str, wheels: list[str], pins: dict[str, str]) -> str:
    pin_line = " ".join(f"{name}=={version}" for name, version in pins.items())
    wheel_paths = " ".join(f"/tmp/titan-wheels/{w}" for w in wheels)
    return f"""# Written by `titan sagemaker dockerfile`. Build and push, then run with
#   titan run ... --backend sagemaker --sagemaker.image_uri=<account>.dkr.ecr.<region>.amazonaws.com/titan:latest
FROM {base_image}

# The versions titan is tested with (this environment's lock).
RUN pip install --no-cache-dir {pin_line}

# titan itself (wheels repacked from the environment that wrote this file).
COPY wheels/ /tmp/titan-wheels/
RUN pip install --no-cache-dir {wheel_paths} && rm -rf /tmp/titan-wheels

# Quiet OpenMP spinning next to the GPU ranks; unbuffered rank output for CloudWatch.
ENV OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
"""


@sagemaker_app.command("dockerfile")
def dockerfile(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the Dockerfile and wheels/.")
    ] = Path("titan-image"),
    region: Annotated[str, typer.Option(help="Region of the AWS base image.")] = "us-east-1",
    pytorch_version: Annotated[str, typer.Option(help="AWS PyTorch image version.")] = "2.10",
    py_version: Annotated[str, typer.Option(help="Python of the AWS image.")] = "py313",
    instance_type: Annotated[str, typer.Option(help="GPU image for this type.")] = "ml.p5.48xlarge",
) -> None:
    """Write DIR/Dockerfile (AWS PyTorch training image + titan) and DIR/wheels/."""
    from sagemaker.core import image_uris

    from titan.backends.sagemaker.bundle import build_wheel, titan_distributions
    from titan.core.plugins import load_plugins

    base = image_uris.retrieve(
        "pytorch",
        region=region,
        version=pytorch_version,
        py_version=py_version,
        instance_type=instance_type,
        image_scope="training",
    )
    active = set(load_plugins().infos)  # every installed titan plugin: the image serves any job
    wheels = [build_wheel(d, output / "wheels").name for d in titan_distributions(active)]
    pins = {name: md.version(name) for name in PINNED}
    output.mkdir(parents=True, exist_ok=True)
    (output / "Dockerfile").write_text(dockerfile_text(base, wheels, pins))
    typer.echo(f"wrote {output / 'Dockerfile'} (FROM {base}) and {len(wheels)} wheels")
    typer.echo(f"build: docker build -t titan {output}")
