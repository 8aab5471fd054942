"""The Slurm backend's launch layout: what a job asks of the cluster, and what the cluster has.

Offline (``--dry-run``) the layout comes from ``[slurm]`` and ``[launch]``
alone: nodes x ranks per node (:func:`titan.backends.slurm.config.node_counts`)
and the GPU that ``slurm.gpu_type`` names (memory and float8 from
:data:`titan.core.layout.GPU_MODELS`). At submission titan also asks the
cluster, with one ``sinfo`` call of a few seconds at most, for the nodes of
the partition: how many, their CPUs, memory (``RealMemory``) and GPUs
(generic resources ``gpu:TYPE:COUNT``). A job that the partition cannot run
is then refused with one line before ``sbatch`` queues it (sbatch itself
accepts a job asking more nodes than the partition has: it pends forever).
If Slurm does not answer (the controller is down or slow), one note says so
and the offline layout is used. If Slurm's configuration cannot be found
(no ``SLURM_CONF``, not on a login node), nothing could reach the cluster, sbatch
included: that is one line naming the environment as the fix.

What only the cluster decides (queue limits, accounts, QOS, node health,
``--constraint`` features) is left to sbatch and the scheduler.

Torch-free and submitit-free: ``titan run`` imports it before any check.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from titan.backends.slurm.config import mem_megabytes, node_counts, sbatch_pairs
from titan.core.errors import ConfigError
from titan.core.layout import Device, LaunchLayout, cpu_device, gpu_model

SINFO_TIMEOUT_S = 5.0
"""How long titan waits for ``sinfo`` at submission before going on without it."""
SINFO_FORMAT = "%N|%P|%c|%m|%G"
"""One line per node and partition: name, partition (``*``: the default), CPUs, RealMemory
(MiB), generic resources."""
MIB = 1024**2


@dataclass(frozen=True)
class Node:
    """One node of a partition, as ``sinfo`` describes it."""

    name: str
    cpus: int
    memory_mb: int
    """RealMemory in MiB; Slurm's default, 1, means the admins did not say."""
    gpus: dict[str, int] = field(default_factory=dict)
    """GPU GRES type ("" when untyped) -> count."""

    def gpu_count(self, gpu_type: str = "") -> int:
        """GPUs of ``gpu_type`` on this node; all of its GPUs when empty."""
        return self.gpus.get(gpu_type, 0) if gpu_type else sum(self.gpus.values())

    @property
    def known_memory_mb(self) -> int | None:
        return self.memory_mb if self.memory_mb > 1 else None


@dataclass(frozen=True)
class Cluster:
    """Partitions and their nodes, as the controller reports them."""

    partitions: dict[str, tuple[Node, ...]]
    default: str = ""
    """The default partition ("" when the cluster has none)."""


class ClusterUnreachable(Exception):
    """Slurm could not be asked (no sinfo, no controller, no answer in time)."""


NO_CONFIGURATION = (
    "Slurm's configuration was not found{why}: export SLURM_CONF=/path/to/slurm.conf "
    "(or run on the cluster's login node)"
)
"""The one line for a Slurm command that cannot find slurm.conf: the fix is the environment."""
_CONFIG_NOT_FOUND = (
    "could not establish a configuration source",  # no SLURM_CONF, no file, no DNS SRV record
    "cannot stat file",  # SLURM_CONF names a missing file (Slurm retries it for 60 s)
    "unable to process configuration file",
)


def missing_configuration(env: dict[str, str] | None = None) -> str:
    """The one-line error when ``SLURM_CONF`` names a file that does not exist, else "".

    Checked before any Slurm command: given a missing file, they retry it for a minute.
    """
    conf = (os.environ if env is None else env).get("SLURM_CONF", "")
    if conf and not os.path.isfile(conf):
        return NO_CONFIGURATION.format(why=f" (SLURM_CONF={conf} does not exist)")
    return ""


def configuration_not_found(stderr: str | bytes | None) -> str:
    """The one-line error if a Slurm command's stderr says it found no configuration, else ""."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lowered = (stderr or "").lower()
    if any(needle in lowered for needle in _CONFIG_NOT_FOUND):
        return NO_CONFIGURATION.format(why="")
    return ""


def parse_gres(text: str) -> dict[str, int]:
    """``gpu:h100:8(S:0-1),nvme:1`` -> ``{"h100": 8}``; untyped ``gpu:4`` -> ``{"": 4}``."""
    gpus: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = int(parts.pop()) if len(parts) > 1 and parts[-1].isdigit() else 1
        kind = parts[1] if len(parts) > 1 else ""
        gpus[kind] = gpus.get(kind, 0) + count
    return gpus


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def parse_sinfo(text: str) -> Cluster:
    """``sinfo --Node --format`` :data:`SINFO_FORMAT` output -> partitions and their nodes."""
    partitions: dict[str, dict[str, Node]] = {}
    default = ""
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 5 or not fields[0]:
            continue
        name, partition, cpus, memory, gres = fields
        if partition.endswith("*"):
            partition = default = partition[:-1]
        node = Node(name, _leading_int(cpus), _leading_int(memory), parse_gres(gres))
        partitions.setdefault(partition, {})[name] = node
    return Cluster({p: tuple(nodes.values()) for p, nodes in partitions.items()}, default)


def _last_line(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ask_cluster(timeout: float = SINFO_TIMEOUT_S) -> Cluster:
    """Every partition's nodes, from ``sinfo`` (hidden partitions too).

    Raises ClusterUnreachable when Slurm does not answer, and a one-line
    ConfigError when it has no configuration to find the cluster with.
    """
    missing = missing_configuration()
    if missing:
        raise ConfigError(missing)
    cmd = ["sinfo", "--all", "--noheader", "--Node", f"--format={SINFO_FORMAT}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ClusterUnreachable("sinfo is not on PATH") from None
    except subprocess.TimeoutExpired as exc:
        if configuration_not_found(exc.stderr):
            raise ConfigError(configuration_not_found(exc.stderr)) from None
        said = _last_line(exc.stderr)  # e.g. the controller it keeps retrying to reach
        raise ClusterUnreachable(
            f"sinfo did not answer within {timeout:g} s" + (f": {said}" if said else "")
        ) from None
    except OSError as exc:
        raise ClusterUnreachable(f"sinfo: {exc}") from None
    if proc.returncode:
        if configuration_not_found(proc.stderr):
            raise ConfigError(configuration_not_found(proc.stderr))
        raise ClusterUnreachable(_last_line(proc.stderr) or f"sinfo exited with {proc.returncode}")
    cluster = parse_sinfo(proc.stdout)
    if not cluster.partitions:
        raise ClusterUnreachable("sinfo listed no partitions")
    return cluster


SCONTROL_TIMEOUT_S = 5.0
"""How long titan waits for a Slurm command about a job (scontrol, sacct, scancel)."""


def slurm_config(env: dict[str, str] | None = None, timeout: float = SCONTROL_TIMEOUT_S) -> dict:
    """``scontrol show config`` as ``{key: value}`` (ClusterName, KillWait, ...); {} if unanswered."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, env=env, timeout=timeout
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


# --- the layout ---------------------------------------------------------------------------


def _options(config: Any) -> tuple[str, str, int | None]:
    """How to set processes per node and nodes, and the most processes per node as far as
    [slurm] says: with --nproc given, the GPUs asked per node."""
    s, launch = config.slurm, config.launch
    if s.gpus_per_node and not launch.nproc_per_node:
        procs, most = "--slurm.gpus_per_node={n}", None
    else:
        procs, most = "--nproc {n}", (s.gpus_per_node or None)
    nodes = "--nnodes {n}" if not s.nodes and launch.nnodes > 1 else "--slurm.nodes={n}"
    return procs, nodes, most


def _where(config: Any, nodes: int, procs: int, partition: str) -> str:
    s = config.slurm
    part = f"partition '{partition}'" if partition else "the default partition"
    if s.gpus_per_node:
        gpus = f"{s.gpus_per_node} GPU(s)"
        ranks = gpus if procs == s.gpus_per_node else f"{procs} rank(s) on {gpus}"
    else:
        ranks = f"{procs} CPU rank(s)"
    return f"Slurm: {nodes} node(s) x {ranks}, {part}"


def _gpu_device(gpu_type: str, part: str) -> tuple[Device, str]:
    """The device a GPU type names, and a note when titan does not know the type."""
    model = gpu_model(gpu_type)
    if model is not None:
        return Device.gpu(model), ""
    return Device("cuda", gpu_type), (
        f"GPU type '{gpu_type}' ({part}) is not one titan knows, so memory per GPU and float8 "
        "are not checked"
    )


def offline_layout(config: Any, unreachable: str = "") -> LaunchLayout:
    """The layout from [slurm] and [launch] alone (``--dry-run``, or Slurm did not answer).

    At most one note: what could not be checked, and how to check it.
    """
    s = config.slurm
    nodes, procs = node_counts(config)
    procs_option, nodes_option, most = _options(config)
    part = f"partition '{s.partition}'" if s.partition else "the default partition"
    later = "" if unreachable else " or submit without --dry-run (titan then asks the cluster)"
    if s.gpus_per_node and s.gpu_type:
        device, note = _gpu_device(s.gpu_type, "slurm.gpu_type")
    elif s.gpus_per_node:
        device = Device("cuda")
        note = (
            "the GPU model is unknown (slurm.gpu_type is empty), so memory per GPU and float8 "
            f"are not checked; set --slurm.gpu_type (e.g. h100){later}"
        )
    else:
        device = Device("cpu")
        note = "the memory of the CPU nodes is unknown, so whether the model fits is not checked"
        note += "; submitting without --dry-run asks the cluster" if not unreachable else ""
    if unreachable:
        lead = (
            f"could not ask Slurm about the nodes of {part} ({unreachable}), so the job is not "
            "checked against their number, GPUs and memory"
        )
        note = f"{lead}; {note}" if note else lead
    return LaunchLayout(
        nodes=nodes,
        procs_per_node=procs,
        device=device,
        where=_where(config, nodes, procs, s.partition),
        procs_option=procs_option,
        nodes_option=nodes_option,
        max_procs_per_node=most,
        notes=(note,) if note else (),
    )


def cluster_layout(config: Any, cluster: Cluster) -> LaunchLayout:
    """The layout on the partition's nodes; one-line ConfigError for what it cannot run."""
    s = config.slurm
    nodes, procs = node_counts(config)
    procs_option, nodes_option, _ = _options(config)
    name = s.partition or cluster.default
    listed = ", ".join(sorted(cluster.partitions))
    if not name:
        raise ConfigError(
            f"this cluster has no default partition; name one with --slurm.partition "
            f"(partitions: {listed})"
        )
    if name not in cluster.partitions:
        raise ConfigError(
            f"slurm.partition '{name}' is not a partition of this cluster (partitions: "
            f"{listed}); set slurm.partition"
        )
    members = cluster.partitions[name]
    part = f"partition '{name}'"
    nodes_key = "--nnodes" if nodes_option.startswith("--nnodes") else "slurm.nodes"
    if nodes > len(members):
        raise ConfigError(
            f"{nodes_key} asks for {nodes} node(s), but {part} has {len(members)}; ask for "
            f"{len(members)} or fewer ({nodes_option.format(n=len(members))}) or choose a "
            "partition with more nodes (--slurm.partition)"
        )
    g, gpu_type = s.gpus_per_node, s.gpu_type
    if g:
        _check_gpus(config, members, part, nodes, procs, nodes_option)
    cpus = procs * max(s.cpus_per_task, 1)
    overcommit = "overcommit" in sbatch_pairs(s.sbatch)
    most_cpus = max(n.cpus for n in members)
    if cpus > most_cpus and not overcommit:
        per_task = f" x slurm.cpus_per_task {s.cpus_per_task}" if s.cpus_per_task > 1 else ""
        raise ConfigError(
            f"{procs} rank(s) per node{per_task} need {cpus} CPUs on each node, but the nodes "
            f"of {part} have at most {most_cpus}; run fewer ranks per node or ask for fewer "
            "CPUs per rank (slurm.cpus_per_task)"
        )
    mem = mem_megabytes(s.mem) if s.mem else None
    known = [m for n in members if (m := n.known_memory_mb)]
    if mem and known and mem > max(known):
        raise ConfigError(
            f"slurm.mem {s.mem} is more than the nodes of {part} have ({max(known)} MiB at "
            "most); lower it (--slurm.mem=0 takes all of a node's memory)"
        )

    def fits(n: Node) -> bool:
        enough_memory = not mem or not n.known_memory_mb or n.known_memory_mb >= mem
        return n.gpu_count(gpu_type) >= g and (overcommit or n.cpus >= cpus) and enough_memory

    fitting = [n for n in members if fits(n)]
    if len(fitting) < nodes:
        needs = [f"{g} {gpu_type + ' ' if gpu_type else ''}GPU(s)"] if g else []
        needs += [] if overcommit else [f"{cpus} CPU(s)"]
        needs += [f"{s.mem} of memory"] if mem else []
        what = " and ".join(needs)
        fix = (
            f"ask for {len(fitting)} node(s) ({nodes_option.format(n=len(fitting))})"
            if fitting
            else "ask for less on each node"
        )
        raise ConfigError(
            f"only {len(fitting)} of the {len(members)} nodes of {part} have {what}; {fix} "
            "or choose another partition (--slurm.partition)"
        )
    note = ""
    if g:
        device, note, most = _cluster_gpu_device(config, fitting, part)
    else:
        device, note = _cluster_cpu_device(procs, fitting, mem, part)
        most = None if overcommit else most_cpus // max(s.cpus_per_task, 1)
    return LaunchLayout(
        nodes=nodes,
        procs_per_node=procs,
        device=device,
        where=_where(config, nodes, procs, name),
        procs_option=procs_option,
        nodes_option=nodes_option,
        max_procs_per_node=most,
        notes=(note,) if note else (),
    )


def _check_gpus(
    config: Any, members: tuple[Node, ...], part: str, nodes: int, procs: int, nodes_option: str
) -> None:
    s = config.slurm
    g, gpu_type = s.gpus_per_node, s.gpu_type
    if not any(n.gpu_count() for n in members):
        raise ConfigError(
            f"slurm.gpus_per_node is {g}, but the nodes of {part} have no GPUs (no gpu GRES); "
            "use --slurm.gpus_per_node=0 on CPU nodes or choose a GPU partition (--slurm.partition)"
        )
    typed = sorted({t for n in members for t, c in n.gpus.items() if t and c})
    if gpu_type and not any(n.gpu_count(gpu_type) for n in members):
        if typed:
            raise ConfigError(
                f"slurm.gpu_type '{gpu_type}' is not a GPU type of {part} (its nodes have: "
                f"{', '.join(typed)}); set --slurm.gpu_type={typed[0]} or choose another "
                "partition (--slurm.partition)"
            )
        raise ConfigError(
            f"slurm.gpu_type is '{gpu_type}', but the GPUs of {part} have no type in Slurm "
            f"(gres gpu:N), so sbatch cannot ask for '{gpu_type}' GPUs; leave slurm.gpu_type "
            "empty (--slurm.gpu_type=)"
        )
    most = max(n.gpu_count(gpu_type) for n in members)
    if g > most:
        kind = f"{gpu_type} " if gpu_type else ""
        fix = f"--slurm.gpus_per_node={most}"
        if config.launch.nproc_per_node > most:
            fix += f" --nproc {most}"
        more = math.ceil(nodes * min(procs, g) / most)
        if more != nodes and more <= len(members):
            fix += f" {nodes_option.format(n=more)}"
        raise ConfigError(
            f"slurm.gpus_per_node is {g}, but the nodes of {part} have at most {most} {kind}"
            f"GPU(s) each; ask for {most} or fewer per node ({fix})"
        )


def _cluster_gpu_device(
    config: Any, fitting: list[Node], part: str
) -> tuple[Device, str, int | None]:
    """The GPU of the nodes the job can land on, a note if unknown, and the most GPUs per node."""
    s = config.slurm
    most = s.gpus_per_node if config.launch.nproc_per_node else None
    if most is None:
        most = max(n.gpu_count(s.gpu_type) for n in fitting)
    types = {s.gpu_type} if s.gpu_type else {t for n in fitting for t, c in n.gpus.items() if c}
    if len(types) > 1:
        named = ", ".join(sorted(t or "untyped" for t in types))
        return (
            Device("cuda"),
            f"{part} has GPUs of several types ({named}) and slurm.gpu_type picks none, so "
            "memory per GPU and float8 are not checked; set --slurm.gpu_type to one of them",
            most,
        )
    (only,) = types
    if not only:
        return (
            Device("cuda"),
            f"the GPUs of {part} have no type in Slurm (gres gpu:N), so their model is "
            "unknown and memory per GPU and float8 are not checked",
            most,
        )
    device, note = _gpu_device(only, part)
    return device, note, most


def _cluster_cpu_device(
    procs: int, fitting: list[Node], mem: int | None, part: str
) -> tuple[Device, str]:
    """Each rank's share of the smallest node memory the job can get (slurm.mem caps it)."""
    per_node = [
        min(m for m in (n.known_memory_mb, mem) if m) for n in fitting if n.known_memory_mb or mem
    ]
    if fitting and len(per_node) == len(fitting):
        return cpu_device(procs, min(per_node) * MIB), ""
    return Device("cpu"), (
        f"the nodes of {part} do not say their memory (RealMemory), so whether the model fits "
        "is not checked; set slurm.mem (e.g. 200G) to check against that"
    )
