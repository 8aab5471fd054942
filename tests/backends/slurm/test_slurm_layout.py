"""The Slurm backend's launch layout, without a cluster: offline, and against partitions as sinfo
describes them (parsed from sinfo's own output format).

The layout on the real test cluster, and jobs refused before sbatch, are in
test_slurm_layout_cluster.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from titan.backends.slurm import SlurmBackend
from titan.backends.slurm.cluster import (
    Cluster,
    ClusterUnreachable,
    Node,
    ask_cluster,
    cluster_layout,
    parse_gres,
    parse_sinfo,
)
from titan.core.errors import ConfigError
from titan.core.layout import GIB, LAYOUT_ENV, Device, LaunchLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import job_with  # noqa: E402

MIB = 1024**2


def offline(*args: str) -> LaunchLayout:
    return SlurmBackend().layout(job_with(*args), offline=True)


def online(cluster: Cluster, *args: str) -> LaunchLayout:
    return cluster_layout(job_with(*args).config, cluster)


# --- offline (--dry-run) -------------------------------------------------------------------


def test_offline_defaults_one_node_of_8_gpus_of_unknown_model_with_one_note():
    lay = offline()
    assert (lay.nodes, lay.procs_per_node, lay.world_size) == (1, 8, 8)
    assert lay.device == Device("cuda")  # memory and float8 unknown (None)
    assert lay.where == "Slurm: 1 node(s) x 8 GPU(s), the default partition"
    assert lay.procs_option.format(n=16) == "--slurm.gpus_per_node=16"
    assert lay.nodes_option.format(n=2) == "--slurm.nodes=2"
    assert lay.max_procs_per_node is None
    assert len(lay.notes) == 1
    assert "memory per GPU and float8 are not checked" in lay.notes[0]
    assert "--slurm.gpu_type" in lay.notes[0]


def test_offline_h100_is_an_80_gb_class_gpu_with_float8():
    lay = offline("--slurm.gpu_type=h100", "--slurm.nodes=2", "--slurm.partition=gpu")
    assert (lay.nodes, lay.procs_per_node) == (2, 8)
    assert lay.device.kind == "cuda" and lay.device.model == "H100 SXM 80GB"
    assert 79 * GIB < lay.device.memory_bytes <= 80 * GIB
    assert lay.device.float8 is True
    assert lay.notes == ()
    assert lay.where == "Slurm: 2 node(s) x 8 GPU(s), partition 'gpu'"


def test_offline_a100_has_no_float8():
    lay = offline("--slurm.gpu_type=a100")
    assert lay.device.model == "A100 80GB" and lay.device.float8 is False
    assert lay.device.memory_bytes == 80 * GIB
    assert lay.notes == ()


def test_offline_unknown_gpu_type_is_kept_and_said_once():
    lay = offline("--slurm.gpu_type=mi300x")
    assert lay.device == Device("cuda", "mi300x")
    assert len(lay.notes) == 1 and "'mi300x'" in lay.notes[0]


def test_offline_cpu_nodes_have_unknown_memory_and_one_note():
    lay = offline("--slurm.gpus_per_node=0", "--nnodes=2", "--nproc=3")
    assert (lay.nodes, lay.procs_per_node) == (2, 3)
    assert lay.device == Device("cpu")  # not this machine's memory: the nodes' is unknown
    assert lay.where == "Slurm: 2 node(s) x 3 CPU rank(s), the default partition"
    assert lay.procs_option.format(n=4) == "--nproc 4"
    assert lay.nodes_option.format(n=4) == "--nnodes 4"  # --slurm.nodes would disagree
    assert len(lay.notes) == 1 and "memory of the CPU nodes is unknown" in lay.notes[0]


def test_offline_nproc_below_gpus_hints_more_nodes_beyond_the_gpus():
    lay = offline("--slurm.gpus_per_node=8", "--nproc=4")
    assert (lay.procs_per_node, lay.max_procs_per_node) == (4, 8)
    assert lay.where == "Slurm: 1 node(s) x 4 rank(s) on 8 GPU(s), the default partition"
    assert lay.more_processes(8) == "--nproc 8"
    assert lay.more_processes(16) == "--slurm.nodes=4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slurm.gpu_type=h100:8"], "slurm.gpu_type 'h100:8' is not a GPU type"),
        (["--slurm.gpu_type=h100", "--slurm.gpus_per_node=0"], "slurm.gpus_per_node is 0"),
        (["--slurm.mem=200GB"], "slurm.mem '200GB' is not a memory size"),
        (["--nproc=9"], "--nproc 9 but slurm.gpus_per_node is 8"),
    ],
)
def test_slurm_keys_that_cannot_run_are_refused_offline(args, message):
    with pytest.raises(ConfigError, match=message):
        offline(*args)


def test_the_script_asks_sbatch_for_the_gpu_type():
    from titan.backends.slurm.script import executor_parameters

    job = job_with("--slurm.gpu_type=h100", "--slurm.gpus_per_node=4")
    lay = SlurmBackend().layout(job, offline=True)
    params = executor_parameters(job.config, lay)
    assert params["gpus_per_node"] == "h100:4" and params["ntasks_per_node"] == 4
    cpu = job_with("--slurm.gpus_per_node=0")
    assert "gpus_per_node" not in executor_parameters(
        cpu.config, offline("--slurm.gpus_per_node=0")
    )


# --- sinfo's answer ------------------------------------------------------------------------


def test_gres_strings_as_slurm_prints_them():
    assert parse_gres("gpu:h100:8(S:0-1)") == {"h100": 8}
    assert parse_gres("gpu:a100:4(S:0),gpu:v100:2(S:1),nvme:1") == {"a100": 4, "v100": 2}
    assert parse_gres("gpu:4") == {"": 4}
    assert parse_gres("gpu:h100") == {"h100": 1}
    assert parse_gres("(null)") == {} and parse_gres("") == {}


SINFO = """\
cpu1|cpu*|64|256000|(null)
cpu2|cpu*|64|256000|(null)
g1|gpu|96|1000000|gpu:h100:8(S:0-1)
g2|gpu|96|1000000|gpu:h100:8(S:0-1)
g3|gpu|96|1000000|gpu:h100:4(S:0)
g1|all|96|1000000|gpu:h100:8(S:0-1)
a1|all|64|500000|gpu:a100:8
u1|plain|32|1|gpu:4
"""


def test_sinfo_lines_become_partitions_of_nodes():
    cluster = parse_sinfo(SINFO)
    assert cluster.default == "cpu"
    assert sorted(cluster.partitions) == ["all", "cpu", "gpu", "plain"]
    assert [n.name for n in cluster.partitions["gpu"]] == ["g1", "g2", "g3"]
    g3 = cluster.partitions["gpu"][2]
    assert (g3.cpus, g3.memory_mb, g3.gpus) == (96, 1000000, {"h100": 4})
    assert cluster.partitions["plain"][0].known_memory_mb is None  # RealMemory=1: not configured


# --- against the partition -----------------------------------------------------------------

CLUSTER = parse_sinfo(SINFO)


def test_gpu_model_and_limits_come_from_the_partitions_gres():
    lay = online(CLUSTER, "--slurm.partition=gpu", "--slurm.nodes=2")
    assert lay.device.model == "H100 SXM 80GB" and lay.device.float8 is True
    assert lay.max_procs_per_node == 8 and lay.notes == ()
    assert lay.where == "Slurm: 2 node(s) x 8 GPU(s), partition 'gpu'"


def test_cpu_memory_is_each_ranks_share_of_the_smallest_node_capped_by_slurm_mem():
    lay = online(CLUSTER, "--slurm.gpus_per_node=0", "--nproc=4")  # default partition: cpu
    assert lay.device.kind == "cpu" and lay.device.memory_bytes == 256000 * MIB // 4
    assert lay.max_procs_per_node == 64 and lay.where.endswith("partition 'cpu'")
    capped = online(CLUSTER, "--slurm.gpus_per_node=0", "--nproc=4", "--slurm.mem=100G")
    assert capped.device.memory_bytes == 100 * 1024 * MIB // 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--slurm.partition=gpu", "--slurm.nodes=4"],
            r"slurm.nodes asks for 4 node\(s\), but .* has 3",
        ),
        (["--slurm.partition=gpu", "--nnodes=4"], r"\(--nnodes 3\)"),
        (["--slurm.partition=gpu", "--slurm.gpus_per_node=16"], r"at most 8 GPU\(s\) each"),
        (["--slurm.partition=gpu", "--slurm.nodes=3"], r"only 2 of the 3 nodes .* 8 GPU\(s\)"),
        (["--slurm.partition=gpu", "--slurm.gpu_type=a100"], "its nodes have: h100"),
        (
            ["--slurm.partition=plain", "--slurm.gpu_type=h100", "--slurm.gpus_per_node=4"],
            "have no type in Slurm",
        ),
        (["--slurm.gpus_per_node=1"], "partition 'cpu' have no GPUs"),
        (["--slurm.partition=nope"], "'nope' is not a partition of this cluster"),
        (["--slurm.gpus_per_node=0", "--nproc=65"], "need 65 CPUs on each node"),
        (["--slurm.gpus_per_node=0", "--slurm.mem=300G"], "slurm.mem 300G is more than"),
    ],
)
def test_what_the_partition_cannot_run_is_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as info:
        online(CLUSTER, *args)
    assert "\n" not in str(info.value)


def test_the_gpus_fix_names_enough_nodes():
    with pytest.raises(ConfigError) as info:
        online(CLUSTER, "--slurm.partition=gpu", "--slurm.gpus_per_node=16")
    assert "(--slurm.gpus_per_node=8 --slurm.nodes=2)" in str(info.value)


def test_overcommit_lifts_the_cpu_check():
    lay = online(CLUSTER, "--slurm.gpus_per_node=0", "--nproc=65", "--slurm.sbatch=overcommit")
    assert lay.procs_per_node == 65 and lay.max_procs_per_node is None


def test_no_default_partition_asks_for_one():
    cluster = Cluster(CLUSTER.partitions, default="")
    with pytest.raises(ConfigError, match="no default partition; name one with --slurm.partition"):
        online(cluster, "--slurm.gpus_per_node=0")


def test_untyped_mixed_and_unknown_gpus_are_a_note_each():
    untyped = online(CLUSTER, "--slurm.partition=plain", "--slurm.gpus_per_node=4")
    assert untyped.device == Device("cuda") and len(untyped.notes) == 1
    assert "no type in Slurm" in untyped.notes[0]
    mixed = online(CLUSTER, "--slurm.partition=all", "--slurm.gpus_per_node=8")
    assert mixed.device == Device("cuda") and "several types (a100, h100)" in mixed.notes[0]
    picked = online(CLUSTER, "--slurm.partition=all", "--slurm.gpu_type=a100")
    assert picked.device.model == "A100 80GB" and picked.notes == ()
    odd = Cluster({"p": (Node("x", 8, 1000, {"mi300x": 8}),)}, "p")
    lay = online(odd)
    assert lay.device == Device("cuda", "mi300x") and "'mi300x'" in lay.notes[0]
    cpu = online(CLUSTER, "--slurm.partition=plain", "--slurm.gpus_per_node=0")
    assert cpu.device == Device("cpu") and "RealMemory" in cpu.notes[0]


# --- asking Slurm --------------------------------------------------------------------------


def fake_bin(folder: Path, **scripts: str) -> str:
    """Shell scripts named like Slurm's commands; a PATH with only them."""
    folder.mkdir()
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_an_unreachable_controller_is_one_note_and_the_offline_layout(tmp_path, monkeypatch):
    path = fake_bin(
        tmp_path / "bin",
        sbatch="exit 1",
        sinfo='echo "slurm_load_partitions: Unable to contact slurm controller" >&2; exit 1',
    )
    monkeypatch.setenv("PATH", path)
    job = job_with("--slurm.gpus_per_node=0", "--slurm.nodes=2")
    lay = SlurmBackend().layout(job, offline=False)
    assert (lay.nodes, lay.device) == (2, Device("cpu"))
    assert len(lay.notes) == 1
    assert "could not ask Slurm" in lay.notes[0]
    assert "Unable to contact slurm controller" in lay.notes[0]


def test_a_silent_sinfo_is_given_up_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_bin(tmp_path / "bin", sinfo="exec /bin/sleep 30"))
    with pytest.raises(ClusterUnreachable, match="did not answer within 0.5 s"):
        ask_cluster(timeout=0.5)


def test_no_sbatch_is_refused_before_asking_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_bin(tmp_path / "bin", sinfo="exit 1"))
    with pytest.raises(ConfigError, match="sbatch is not on PATH"):
        SlurmBackend().layout(job_with("--slurm.gpus_per_node=0"), offline=False)


# --- the ranks get the layout --------------------------------------------------------------


def test_run_rank_hands_the_layout_to_the_trainer(monkeypatch):
    import titan.backends.slurm.task as task
    import titan.core.train

    seen = {}

    def fake_main(argv):
        seen["layout"] = os.environ.get(LAYOUT_ENV)
        seen["argv"] = argv
        return 0

    lay = LaunchLayout(2, 1, Device("cpu", "", 6 * GIB), "Slurm: 2 node(s) x 1 CPU rank(s)")
    monkeypatch.setattr(task, "setup_distributed_env", lambda gpus: None)
    monkeypatch.setattr(titan.core.train, "main", fake_main)
    monkeypatch.delenv(LAYOUT_ENV, raising=False)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}
    try:
        task.run_rank("/shared/run/job_config.toml", 0, 3, lay.to_env())
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        os.environ.pop(LAYOUT_ENV, None)
    assert seen["argv"] == ["/shared/run/job_config.toml"]
    assert LaunchLayout.from_env(seen["layout"]) == lay
    assert json.loads(seen["layout"])["nodes"] == 2
