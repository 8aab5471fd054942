"""GPUs that Slurm allocates, reaching the ranks of a real job (see conftest.py).

The test cluster's nodes advertise ``gpu:h100:2`` each (scripts/slurm-cluster:
generic resources backed by stand-in device files). Slurm does the allocation:
it picks which GPU indices a job gets on each node and sets
``CUDA_VISIBLE_DEVICES`` / ``SLURM_STEP_GPUS`` in every task. titan's ranks see
all of their node's allocated GPUs and bind ``cuda:LOCAL_RANK``
(:func:`titan.core.parallel.init_parallel`), i.e. the physical GPU
``CUDA_VISIBLE_DEVICES[LOCAL_RANK]``. There is no GPU behind the files, so the
ranks train on CPU; a test plugin records what each rank was given and which
index titan would bind, and the test compares that with Slurm's own account
(``scontrol show job -d``: ``GRES=gpu:h100:1(IDX:1)`` per node).

To make a wrong binding visible, another job first holds one GPU of node1: the
titan job then gets node1's *other* GPU, and a rank that took "GPU 0 because it
is local rank 0" (e.g. CUDA_VISIBLE_DEVICES overwritten with the local rank)
would be on the other job's GPU.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import SlurmJob, job_state, submit, wait_until  # noqa: E402

from titan.core.testing import install_plugin, pythonpath_with

RECORD_PLUGIN = '''
"""Test plugin: each rank writes what Slurm gave it and the device index titan binds, then
waits for the test's go: Slurm forgets a job's GPU indices once it ends, so the test reads
them while every rank is held here."""
import json
import os
import time
from pathlib import Path

from titan.core import hookimpl

AUTOLOAD = True
SEEN = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE",
        "SLURM_LOCALID", "SLURMD_NODENAME", "LOCAL_RANK", "RANK")


@hookimpl
def titan_train_start(trainer):
    record = {name: os.environ.get(name) for name in SEEN}
    # What init_parallel hands torch.cuda.set_device with a GPU: titan's binding, from the
    # GPUs this process sees.
    from titan.core.parallel import cuda_index

    visible = len(os.environ["CUDA_VISIBLE_DEVICES"].split(","))
    record["bound_index"] = cuda_index(trainer.parallel.local_rank, visible)
    record["device"] = str(trainer.parallel.device)
    folder = Path(os.environ["TITAN_TEST_RECORD"])
    (folder / f"rank-{record['RANK']}.json").write_text(json.dumps(record))
    deadline = time.monotonic() + 600
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("test plugin: the test's go never came")
        time.sleep(0.01)
'''


def indices(text: str) -> list[int]:
    """Slurm's index list (``0-1``, ``0,1``, ``1``) as numbers, in order."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def allocated_gpus(job_id: str) -> dict[str, list[int]]:
    """node -> GPU indices Slurm allocated to the job there (``scontrol show job -d``)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, check=True
    ).stdout
    found = re.findall(r"Nodes=(\S+) .*?GRES=gpu:[\w.-]*:?\d+\(IDX:([\d,-]+)\)", out)
    assert found, out
    nodes = {}
    for nodelist, idx in found:
        for node in subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        ).stdout.split():
            nodes[node] = indices(idx)
    return nodes


def rank_records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank-*.json"))]


def submit_recorded(name: str, runs: Path, exact_args: list[str], *args: str) -> SlurmJob:
    """A 2-step job asking for GPUs, with the recording plugin in its environment."""
    site, record = runs / f"{name}-site", runs / f"{name}-record"
    install_plugin(site, "record_gpus", RECORD_PLUGIN)
    record.mkdir(parents=True)
    job = submit(
        name,
        runs / name,
        *exact_args,
        "--training.steps=2",
        *args,
        env={"PYTHONPATH": pythonpath_with(site), "TITAN_TEST_RECORD": str(record)},
    )
    job.planned_steps = 2
    return job


def assert_ranks_bind_slurms_gpus(job: SlurmJob, ranks: int) -> dict[str, list[int]]:
    """Each rank saw exactly its node's allocation and binds a GPU of it, its own.

    Returns Slurm's allocation (node -> indices), read while every rank is held.
    """
    record = job.dump.parent / f"{job.name}-record"

    def all_held() -> bool:
        assert job_state(job.id) in ("PENDING", "CONFIGURING", "RUNNING"), job.id
        return len(list(record.glob("rank-*.json"))) == ranks

    wait_until(all_held, f"the {ranks} ranks of job {job.name} ({job.id}) starting to train")
    allocation = allocated_gpus(job.id)
    (record / "go").touch()
    followed = job.follow()
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert sorted(job.losses()) == [1, 2]  # trained, on CPU
    bound: dict[str, list[int]] = {}
    for r in rank_records(record):
        node = r["SLURMD_NODENAME"]
        visible = indices(r["CUDA_VISIBLE_DEVICES"])
        assert visible == allocation[node], (r, allocation)  # Slurm's allocation, as given
        assert indices(r["SLURM_STEP_GPUS"]) == allocation[node], r
        assert int(r["LOCAL_RANK"]) == int(r["SLURM_LOCALID"]), r
        assert r["device"] == "cpu", r  # no GPU behind the stand-in devices
        bound.setdefault(node, []).append(visible[r["bound_index"]])
    # Every rank of a node on its own GPU, and every GPU Slurm gave the node used by one rank.
    assert {node: sorted(gpus) for node, gpus in bound.items()} == allocation, (bound, allocation)
    return allocation


def test_ranks_bind_the_gpus_slurm_allocated(slurm_cluster, exact_args, tmp_path: Path):
    """`titan run --backend slurm --slurm.gpus_per_node=N`: Slurm allocates, titan binds.

    One job with 1 GPU on each of two nodes while another job holds one of node1's GPUs,
    one job with 2 GPUs (2 ranks) on one node.
    """
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-J", "titan-test-gpu-holder", "-w", "node1"]
        + ["--gpus-per-node=1", "-o", "/dev/null", "--wrap", "exec sleep infinity"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    jobs: list[SlurmJob] = []
    try:
        wait_until(lambda: job_state(blocker) == "RUNNING", "the GPU holder job starting")
        held = allocated_gpus(blocker)["node1"]
        assert len(held) == 1

        one = submit_recorded("gpus-1x2", tmp_path, exact_args, "--slurm.gpus_per_node=1")
        jobs.append(one)
        two = submit_recorded(
            "gpus-2x1", tmp_path, exact_args, "--slurm.gpus_per_node=2", "--slurm.nodes=1"
        )
        jobs.append(two)
        for job, count in ((one, 1), (two, 2)):
            script = (job.dump / "slurm" / f"{job.id}_submission.sh").read_text()
            assert f"#SBATCH --gpus-per-node={count}\n" in script
            assert job.scontrol()["TresPerNode"] == f"gres:gpu:{count}"

        allocation = assert_ranks_bind_slurms_gpus(one, ranks=2)
        assert sorted(allocation) == ["node1", "node2"]
        assert all(len(gpus) == 1 for gpus in allocation.values())
        assert allocation["node1"] != held  # node1's other GPU: the held one is not touched

        allocation = assert_ranks_bind_slurms_gpus(two, ranks=2)
        assert list(allocation.values()) == [[0, 1]]  # one node, both GPUs, one per rank
    finally:
        subprocess.run(["scancel", blocker, *(j.id for j in jobs)], capture_output=True)
