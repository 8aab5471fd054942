"""Which GPU a rank takes, from what its launcher left visible (``titan.core.parallel``).

The Slurm test (tests/backends/slurm/test_slurm_gpus.py) checks the common case on a real
cluster: every process of a node sees the node's GPUs and takes its local rank's. Here, the
launcher layouts that cluster does not produce: one GPU bound per task (Slurm's
``--gpu-bind=single:1``: local rank 1 sees only its own GPU, as ``CUDA_VISIBLE_DEVICES=1``
renumbered to index 0 inside the process), and more processes than GPUs.
"""

from __future__ import annotations

import pytest

from titan.core.parallel import cuda_index


def test_every_process_sees_the_node_s_gpus() -> None:
    assert [cuda_index(rank, 8) for rank in range(8)] == list(range(8))


def test_one_gpu_bound_per_task_is_index_zero_for_every_local_rank() -> None:
    assert [cuda_index(rank, 1) for rank in range(4)] == [0, 0, 0, 0]


def test_more_processes_than_visible_gpus_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(
        RuntimeError, match=r"local rank 2 sees 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=0,1\)"
    ):
        cuda_index(2, 2)
