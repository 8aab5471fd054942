"""Play SageMaker's part for a training job whose request reached moto: hosts, /opt/ml, start.

What the service does before the container's entrypoint runs, done here from
the request (DescribeTrainingJob) and moto's S3:

* one ``/opt/ml`` tree per host (``algo-1`` ... ``algo-N``) with
  ``input/config/{resourceconfig,inputdataconfig,hyperparameters}.json``,
  every channel downloaded into ``input/data/<channel>``, ``/opt/ml/checkpoints``
  restored from a previous attempt when given, empty ``model`` and ``output``;
* each host starts in its own mount, UTS and PID namespaces (``unshare -m -u
  -p -f``): its tree bind-mounted at ``/opt/ml``, hostname ``algo-N``, an
  ``/etc/hosts`` that names every host, and the request's entrypoint and
  arguments as PID 1 with ``TRAINING_JOB_NAME`` and the request's environment.

The hosts share the caller's network namespace (the tests' loopback-only one),
so ``algo-2`` reaches ``algo-1:7777`` as on a real cluster. The image is this
machine's Python environment: ``python3``/``torchrun`` of the test's venv come
first on PATH (the "custom image" case, titan already installed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sm_helpers import client

OPT_ML = Path("/opt/ml")


@dataclass
class Host:
    name: str
    tree: Path
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


def _download(moto_url: str, uri: str, dest: Path) -> None:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = client("s3", moto_url)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix) :].lstrip("/")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))


def build_trees(
    desc: dict, moto_url: str, root: Path, restore_checkpoints: Path | None = None
) -> list[Host]:
    """One /opt/ml tree per host of the job, as SageMaker lays it out."""
    count = desc["ResourceConfig"]["InstanceCount"]
    names = [f"algo-{i + 1}" for i in range(count)]
    hosts = []
    for name in names:
        tree = root / name
        config = tree / "input" / "config"
        config.mkdir(parents=True)
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {
                    "current_host": name,
                    "current_instance_type": desc["ResourceConfig"]["InstanceType"],
                    "current_group_name": "homogeneousCluster",
                    "hosts": names,
                    "instance_groups": [
                        {
                            "instance_group_name": "homogeneousCluster",
                            "instance_type": desc["ResourceConfig"]["InstanceType"],
                            "hosts": names,
                        }
                    ],
                    "network_interface_name": "lo",
                }
            )
        )
        channels = {}
        for ch in desc["InputDataConfig"]:
            channels[ch["ChannelName"]] = {
                "TrainingInputMode": ch.get("InputMode", "File"),
                "S3DistributionType": ch["DataSource"]["S3DataSource"]["S3DataDistributionType"],
                "RecordWrapperType": "None",
            }
            _download(
                moto_url,
                ch["DataSource"]["S3DataSource"]["S3Uri"],
                tree / "input" / "data" / ch["ChannelName"],
            )
        (config / "inputdataconfig.json").write_text(json.dumps(channels))
        (config / "hyperparameters.json").write_text(json.dumps(desc.get("HyperParameters", {})))
        for d in ("model", "output/data", "output/tensorboard", "code"):
            (tree / d).mkdir(parents=True, exist_ok=True)
        local_ckpt = Path(desc["CheckpointConfig"]["LocalPath"])
        ckpt = tree / local_ckpt.relative_to(OPT_ML)
        if restore_checkpoints is not None:  # SageMaker restores the S3 copy on every host
            shutil.copytree(restore_checkpoints, ckpt)
        ckpt.mkdir(parents=True, exist_ok=True)
        (tree / "etc-hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names)
        )
        hosts.append(Host(name, tree))
    return hosts


def start(hosts: list[Host], desc: dict, env_extra: dict[str, str] | None = None) -> None:
    """Start every host's container entrypoint, in its own namespaces."""
    OPT_ML.mkdir(parents=True, exist_ok=True)
    algo = desc["AlgorithmSpecification"]
    command = [*algo["ContainerEntrypoint"], *algo.get("ContainerArguments", [])]
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "HOME": str(hosts[0].tree.parent),
        "TRAINING_JOB_NAME": desc["TrainingJobName"],
        "GLOO_SOCKET_IFNAME": "lo",  # gloo stands in for NCCL on these CPUs
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **desc.get("Environment", {}),
        **(env_extra or {}),
    }
    for host in hosts:
        setup = (
            f"mount --bind {host.tree} /opt/ml && mount --bind {host.tree / 'etc-hosts'} "
            f'/etc/hosts && hostname {host.name} && exec "$@"'
        )
        host.log = host.tree.parent / f"{host.name}.log"
        with host.log.open("wb") as log:
            host.proc = subprocess.Popen(
                [
                    "unshare",
                    "-m",
                    "-u",
                    "-p",
                    "-f",
                    "--mount-proc",
                    "--kill-child",
                    "sh",
                    "-c",
                    setup,
                    "sh",
                    *command,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def wait(hosts: list[Host], timeout: float = 400) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for host in hosts:
        try:
            codes.append(host.proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            kill(hosts)
            raise AssertionError(
                f"{host.name} did not finish in {timeout} s:\n{host.output()[-4000:]}"
            ) from None
    return codes


def kill(hosts: list[Host]) -> None:
    """The instance goes away: every process of every host dies at once (SIGKILL)."""
    for host in hosts:
        if host.proc and host.proc.poll() is None:
            os.killpg(host.proc.pid, signal.SIGKILL)
            host.proc.wait()


def run_job(desc: dict, moto_url: str, root: Path, **kw) -> list[Host]:
    """Build the trees, run every host to the end; fail with the logs if a host fails."""
    hosts = build_trees(desc, moto_url, root, kw.pop("restore_checkpoints", None))
    start(hosts, desc, kw.pop("env_extra", None))
    codes = wait(hosts, **kw)
    if any(codes):
        logs = "\n".join(
            f"--- {h.name} (exit {c})\n{h.output()[-6000:]}"
            for h, c in zip(hosts, codes, strict=True)
        )
        raise AssertionError(f"the training job failed on a host:\n{logs}")
    return hosts
