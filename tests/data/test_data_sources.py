"""Where data comes from: local files and folders in several formats, hub names, SageMaker
channels, fsspec URLs and weighted mixtures; each mistake is a clear error."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import Counter

import pytest
import torch

from titan.core.data.loader import build_dataloader, open_split_documents, plan_data
from titan.core.data.sources import hub_load_kwargs, parse_source, select_split_files
from titan.core.errors import ConfigError


def _texts(config, split="train") -> list[str]:
    return [d["text"] for d in open_split_documents(config, plan_data(config, split))]


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# --- local files and folders ----------------------------------------------------


def test_bundled_dataset_has_train_and_validation_splits(make_config):
    config = make_config()
    assert len(_texts(config)) == 274
    assert len(_texts(config, "validation")) == 14


def test_folder_files_are_assigned_to_splits_by_name():
    files = [
        "/d/c4-train.00000-of-00002.json.gz",
        "/d/c4-train.00001-of-00002.json.gz",
        "/d/c4-validation.00000-of-00001.json.gz",
        "/d/val/part-0.jsonl",
        "/d/test.jsonl",
        "/d/interval_notes.jsonl",  # "val" inside a word is not a split name
    ]
    assert select_split_files(files, "/d", "train", False) == files[:2]
    assert select_split_files(files, "/d", "validation", False) == [files[2], files[3]]
    plain = ["/d/a.jsonl", "/d/b.jsonl", "/d/test.jsonl"]
    assert select_split_files(plain, "/d", "train", False) == plain[:2]  # untagged -> train
    assert select_split_files(plain, "/d", "validation", False) == []
    assert select_split_files(plain, "/d", "validation", True) == plain[:2]  # named for it


def test_parquet_text_and_compressed_jsonl_files(tmp_path, make_config):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": ["alpha doc", "beta doc"], "n": [1, 2]}), tmp_path / "a.parquet"
    )
    (tmp_path / "book.txt").write_text("First paragraph\nstill first.\n\nSecond paragraph.\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gamma doc"}) + "\n")
    for name, expected in [
        ("a.parquet", ["alpha doc", "beta doc"]),
        ("book.txt", ["First paragraph\nstill first.", "Second paragraph.\n"]),
        ("c.jsonl.gz", ["gamma doc"]),
    ]:
        config = make_config(**{"training.dataset_path": str(tmp_path / name)})
        assert _texts(config) == expected, name


def test_text_column_is_configurable(tmp_path, make_config, bundled_tokenizer):
    _write_jsonl(tmp_path / "code.jsonl", [{"content": "print('hi')", "lang": "py"}] * 3)
    config = make_config(
        **{
            "training.dataset_path": str(tmp_path / "code.jsonl"),
            "data.text_column": "content",
            "training.seq_len": 4,
            "training.local_batch_size": 1,
        }
    )
    assert _texts(config) == ["print('hi')"] * 3
    assert len(list(build_dataloader(config, bundled_tokenizer, infinite=False))) > 0


def test_missing_text_column_is_a_clear_error(tmp_path, make_config, bundled_tokenizer):
    _write_jsonl(tmp_path / "d.jsonl", [{"content": "x", "url": "u"}])
    config = make_config(**{"training.dataset_path": str(tmp_path / "d.jsonl")})
    with pytest.raises(
        ConfigError,
        match=r"no text column 'text' \(its columns: content, url\); set data.text_column",
    ):
        build_dataloader(config, bundled_tokenizer)


def test_missing_file_is_a_clear_error(tmp_path, make_config, bundled_tokenizer):
    for missing in (str(tmp_path / "nope.jsonl"), "./data/corpus", "no_such_file.parquet"):
        config = make_config(**{"training.dataset_path": missing})
        with pytest.raises(ConfigError, match=r"not found: no such file or folder; set training"):
            build_dataloader(config, bundled_tokenizer)


def test_empty_dataset_is_a_clear_error(tmp_path, make_config, bundled_tokenizer):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "nodata").mkdir()
    (tmp_path / "nodata" / "README.md").write_text("no data here")
    cases = [
        (tmp_path / "empty.jsonl", r"is empty: it has no documents"),
        (tmp_path / "nodata", r"holds no data files"),
    ]
    for path, message in cases:
        config = make_config(**{"training.dataset_path": str(path)})
        with pytest.raises(ConfigError, match=message):
            build_dataloader(config, bundled_tokenizer)


def test_single_file_has_no_validation_split_unless_given_for_it(tmp_path, make_config):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "t"}])
    _write_jsonl(tmp_path / "heldout.jsonl", [{"text": "v"}])
    config = make_config(**{"training.dataset_path": str(tmp_path / "train.jsonl")})
    with pytest.raises(ConfigError, match=r"single file, so it has no 'validation' split; set"):
        _texts(config, "validation")
    config = make_config(
        **{
            "training.dataset_path": str(tmp_path / "train.jsonl"),
            "validation.dataset_path": str(tmp_path / "heldout.jsonl"),
        }
    )
    assert _texts(config, "validation") == ["v"]


# --- hub, SageMaker, fsspec -------------------------------------------------------


def test_hub_names_become_streaming_load_dataset_calls(make_config):
    spec = parse_source("allenai/c4:en")
    assert (spec.kind, spec.location, spec.hub_config) == ("hub", "allenai/c4", "en")
    assert parse_source("allenai/c4", hub_config="en").hub_config == "en"
    assert parse_source("roneneldan/TinyStories").kind == "hub"
    assert hub_load_kwargs("allenai/c4", "en", "train") == {
        "path": "allenai/c4",
        "name": "en",
        "split": "train",
        "streaming": True,
    }
    assert hub_load_kwargs("roneneldan/TinyStories", None, "validation") == {
        "path": "roneneldan/TinyStories",
        "split": "validation",
        "streaming": True,
    }
    # torchtitan's dataset name "c4" means allenai/c4, config en.
    plan = plan_data(make_config(**{"training.dataset": "c4"}))
    assert plan.sources == ["allenai/c4:en"]


def test_hub_dataset_offline_is_a_clear_error(monkeypatch, make_config, bundled_tokenizer):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    config = make_config(**{"training.dataset": "allenai/c4", "data.hub_config": "en"})
    with pytest.raises(ConfigError) as err:
        build_dataloader(config, bundled_tokenizer)
    message = str(err.value)
    assert "'allenai/c4' is not a local file or folder" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert "set training.dataset_path" in message


def test_sagemaker_channel(tmp_path, monkeypatch, make_config):
    channel = tmp_path / "input" / "train"
    channel.mkdir(parents=True)
    _write_jsonl(channel / "shard-0.jsonl", [{"text": "from the channel"}])
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    config = make_config(**{"training.dataset_path": "sm-channel:train"})
    assert _texts(config) == ["from the channel"]
    monkeypatch.delenv("SM_CHANNEL_TRAIN")
    with pytest.raises(ConfigError, match=r"channel 'train' not found: neither SM_CHANNEL_TRAIN"):
        _texts(config)


def test_fsspec_urls_are_listed_and_read(tmp_path, make_config):
    (tmp_path / "bucket").mkdir()
    _write_jsonl(tmp_path / "bucket" / "a-train.jsonl", [{"text": "one"}, {"text": "two"}])
    _write_jsonl(tmp_path / "bucket" / "a-validation.jsonl", [{"text": "three"}])
    config = make_config(**{"training.dataset_path": f"file://{tmp_path / 'bucket'}"})
    assert _texts(config) == ["one", "two"]
    assert _texts(config, "validation") == ["three"]


def test_s3_without_s3fs_says_what_to_install(make_config):
    try:  # s3fs is deliberately not a dependency of titan
        import s3fs  # noqa: F401
    except ImportError:
        config = make_config(**{"training.dataset_path": "s3://bucket/c4/"})
        with pytest.raises(ConfigError, match=r"pip install s3fs"):
            _texts(config)
    else:  # with s3fs installed, the URL is accepted as a remote source
        assert parse_source("s3://bucket/c4/").kind == "remote"


# --- mixtures -------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mixture_draws_sources_by_weight_and_resumes_exactly(
    tmp_path, make_config, bundled_tokenizer, num_workers
):
    _write_jsonl(tmp_path / "web.jsonl", [{"text": f"web page {i}"} for i in range(400)])
    _write_jsonl(tmp_path / "code.jsonl", [{"content": f"code file {i}"} for i in range(400)])
    config = make_config(
        **{
            "data.sources": [str(tmp_path / "web.jsonl"), str(tmp_path / "code.jsonl")],
            "data.weights": [3.0, 1.0],
            "data.text_columns": ["text", "content"],
            "training.seq_len": 16,
            "training.local_batch_size": 4,
            "data.num_workers": num_workers,
        }
    )
    first = Counter(t.split()[0] for t in _texts(config)[:400])
    assert 0.65 < first["web"] / 400 < 0.85  # 3:1 weights -> about 75% web

    loader = build_dataloader(config, bundled_tokenizer)
    it = iter(loader)
    head = [next(it) for _ in range(6)]
    buf = io.BytesIO()  # as the checkpoint stores it: torch.save, then a weights-only load
    torch.save(loader.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    tail = [next(it) for _ in range(6)]
    resumed = build_dataloader(config, bundled_tokenizer)
    resumed.load_state_dict(state)
    again = iter(resumed)
    assert all(torch.equal(next(again)[0], x) for x, _ in tail)
    text = bundled_tokenizer.decode(torch.cat([x.flatten() for x, _ in head]).tolist())
    assert re.search(r"web page \d+", text) and re.search(r"code file \d+", text)


def test_mixture_config_mistakes_fail_before_launch(make_config):
    with pytest.raises(ConfigError, match=r"data.weights has 3 entries but there are 2 sources"):
        make_config(**{"data.sources": ["a", "b"], "data.weights": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"data.weights must all be positive"):
        make_config(**{"data.sources": ["a", "b"], "data.weights": [1, 0]})
