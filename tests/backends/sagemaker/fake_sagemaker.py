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
so ``algo-2`` reaches ``algo-1:7777`` as on a real cluster. The image is a
Python environment whose ``bin`` comes first on PATH: by default the test's
venv (the "custom image" case, titan already installed); ``image_bin`` names
another, e.g. a fresh venv without titan, where the SDK's ``sm_train.sh``
pip-installs the code channel's ``requirements.txt`` (titan's wheels) at start.

As root the namespaces need nothing else; as another user they are created in
a user namespace of its own (``unshare -r``), which the kernel must allow.
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

from prerequisites import require
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


def image_path(image_bin: Path | None) -> str:
    """PATH in the container: the image's ``bin`` first, and no other Python environment's
    (the test's venv stays out of a bare image's PATH, so only what pip installs runs)."""
    venv_bin = str(Path(sys.executable).parent)
    rest = [d for d in os.environ["PATH"].split(os.pathsep) if d and d != venv_bin]
    return os.pathsep.join([str(image_bin or venv_bin), *rest])


def namespaces() -> list[str]:
    """``unshare`` with private mount, UTS and PID namespaces: directly as root, else inside
    a user namespace of the caller's (``-r``), or the test fails with the one line why not."""
    base = ["unshare", "-m", "-u", "-p", "-f", "--mount-proc", "--kill-child"]
    if os.geteuid() == 0:
        return base
    probe = subprocess.run([*base, "-r", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        require(
            "user namespaces (the fake SageMaker hosts): run as root, or allow unprivileged "
            "user namespaces (sysctl kernel.unprivileged_userns_clone=1 and a non-zero "
            f"user.max_user_namespaces) so `unshare -r -m -u -p -f` works "
            f"({probe.stderr.strip() or 'exit ' + str(probe.returncode)})",
        )
    return [*base, "-r"]


def start(
    hosts: list[Host],
    desc: dict,
    env_extra: dict[str, str] | None = None,
    image_bin: Path | None = None,
) -> None:
    """Start every host's container entrypoint, in its own namespaces."""
    try:
        OPT_ML.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        require(
            "/opt/ml (the fake SageMaker hosts' mount point): run as root, "
            "or create it once as root (mkdir /opt/ml)",
        )
    unshare = namespaces()
    algo = desc["AlgorithmSpecification"]
    command = [*algo["ContainerEntrypoint"], *algo.get("ContainerArguments", [])]
    env = {
        "PATH": image_path(image_bin),
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
                    *unshare,
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
        host.proc.log = host.log  # type: ignore[attr-defined]  # gates.wait_for_file shows it


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
    start(hosts, desc, kw.pop("env_extra", None), kw.pop("image_bin", None))
    codes = wait(hosts, **kw)
    if any(codes):
        logs = "\n".join(
            f"--- {h.name} (exit {c})\n{h.output()[-6000:]}"
            for h, c in zip(hosts, codes, strict=True)
        )
        raise AssertionError(f"the training job failed on a host:\n{logs}")
    return hosts
