"""Exact resume: after loading a saved loader state, the next batch is the one a run without
interruption would have had, mid-epoch and across epochs, with and without worker processes."""

from __future__ import annotations

import io

import pytest
import torch

from titan.core.data.loader import build_dataloader
from titan.core.errors import ConfigError


def _through_checkpoint(state: dict) -> dict:
    """What the trainer's checkpoint does with the loader state: torch.save, weights-only load."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def _take(it, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_exactly_the_batches_of_an_uninterrupted_run(
    corpus, make_config, bundled_tokenizer, num_workers
):
    # ~15 batches per epoch: 25 batches cross an epoch boundary; stop at 4 (mid-epoch) and 18.
    config = make_config(
        **{
            "training.dataset_path": str(corpus(files=2, docs=40)),
            "training.seq_len": 16,
            "training.local_batch_size": 2,
            "data.num_workers": num_workers,
        }
    )
    total = 25
    reference = _take(iter(build_dataloader(config, bundled_tokenizer)), total)
    assert not _same(reference[:5], reference[5:10])  # the data actually varies

    for stop in (4, 18):
        first = build_dataloader(config, bundled_tokenizer)
        it = iter(first)
        before = _take(it, stop)
        state = _through_checkpoint(first.state_dict())
        del it, first  # the interrupted run is gone (its workers too)
        resumed = build_dataloader(config, bundled_tokenizer)
        resumed.load_state_dict(state)
        after = _take(iter(resumed), total - stop)
        assert _same(before, reference[:stop])
        assert _same(after, reference[stop:]), f"resume after {stop} batches diverged"


def test_resume_of_a_two_rank_job_restores_each_rank(corpus, make_config, bundled_tokenizer):
    config = make_config(
        **{
            "training.dataset_path": str(corpus(files=1, docs=40)),
            "training.seq_len": 8,
            "training.local_batch_size": 2,
        }
    )
    for rank in (0, 1):
        loader = build_dataloader(config, bundled_tokenizer, dp_rank=rank, dp_world_size=2)
        reference = _take(
            iter(build_dataloader(config, bundled_tokenizer, dp_rank=rank, dp_world_size=2)), 9
        )
        it = iter(loader)
        _take(it, 5)
        state = _through_checkpoint(loader.state_dict())
        resumed = build_dataloader(config, bundled_tokenizer, dp_rank=rank, dp_world_size=2)
        resumed.load_state_dict(state)
        assert _same(_take(iter(resumed), 4), reference[5:])


def test_resuming_with_another_reader_layout_is_a_clear_error(
    corpus, make_config, bundled_tokenizer
):
    config = make_config(
        **{
            "training.dataset_path": str(corpus(files=1, docs=20)),
            "training.seq_len": 8,
            "training.local_batch_size": 2,
        }
    )
    loader = build_dataloader(config, bundled_tokenizer)
    _take(iter(loader), 2)
    state = _through_checkpoint(loader.state_dict())
    other = build_dataloader(config, bundled_tokenizer, dp_rank=0, dp_world_size=2)
    other.load_state_dict(state)
    with pytest.raises(ConfigError, match="same data-parallel degree and data.num_workers"):
        next(iter(other))


@pytest.mark.parametrize(("saved_workers", "resumed_workers"), [(2, 0), (0, 2), (2, 1)])
def test_resuming_with_another_num_workers_continues_after_the_batches_read(
    corpus, make_config, bundled_tokenizer, capfd, saved_workers, resumed_workers
):
    """torchdata refuses such a state (AssertionError); titan skips the batches already read."""
    settings = {
        "training.dataset_path": str(corpus(files=1, docs=40)),
        "training.seq_len": 8,
        "training.local_batch_size": 2,
    }
    saved = make_config(**settings, **{"data.num_workers": saved_workers})
    resumed_config = make_config(**settings, **{"data.num_workers": resumed_workers})
    loader = build_dataloader(saved, bundled_tokenizer)
    it = iter(loader)
    _take(it, 5)
    state = _through_checkpoint(loader.state_dict())
    del it, loader
    reference = _take(iter(build_dataloader(resumed_config, bundled_tokenizer)), 8)

    resumed = build_dataloader(resumed_config, bundled_tokenizer)
    resumed.load_state_dict(state)
    assert _same(_take(iter(resumed), 3), reference[5:8])  # batch 6 on, of the new layout
    assert "data.num_workers changed since the checkpoint" in capfd.readouterr().err
