"""`titan convert` as a user runs it, and training that starts from a converted HF model.

HF model -> `titan convert hf-to-titan` -> `titan run` with
`checkpoint.initial_load_path` (1 step at a negligible learning rate) ->
`titan convert titan-to-hf` of the run's checkpoint -> transformers gives the
original model's logits back. That proves the trainer really started from
the converted weights and that training checkpoints export.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from cli_runs import one_line_refusal  # tests/ is on sys.path (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
TITAN = [sys.executable, "-m", "titan.core.cli"]


def titan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*TITAN, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    return one_line_refusal(result, *needles)


def test_convert_train_export(make_hf_model, tmp_path: Path) -> None:
    # vocab 2048 covers the bundled tokenizer, so `titan run` needs no tokenizer file.
    hf, hf_dir = make_hf_model(vocab_size=2048, num_hidden_layers=1)
    converted = tmp_path / "converted"
    result = titan("convert", "hf-to-titan", str(hf_dir), str(converted))
    assert result.returncode == 0, result.stderr
    assert "llama3 (custom size)" in result.stdout
    suggested = next(line for line in result.stdout.splitlines() if "titan run" in line)
    run_args = shlex.split(suggested.split("titan run", 1)[1])
    assert f"--checkpoint.initial_load_path={converted}" in run_args

    # The suggested command, run in this process (a subprocess would pay ~15 s of imports).
    from titan.core.config.overrides import parse_overrides
    from titan.core.launch import prepare_job
    from titan.core.train import run_training

    run = tmp_path / "run"
    overrides = parse_overrides(
        [
            *run_args,
            "--training.steps=1",
            "--training.seq_len=32",
            "--training.local_batch_size=2",
            "--training.mixed_precision_param=float32",
            "--optimizer.lr=1e-12",
            "--lr_scheduler.warmup_steps=0",
            "--checkpoint.enable_checkpoint=true",
            f"--job.dump_folder={run}",
        ]
    )
    job = prepare_job(None, overrides=overrides)
    job.write_config()  # as `titan run` does: titan-to-hf reads the model from it
    run_training(job)
    step = run / "checkpoint" / "step-1"
    assert step.is_dir()

    exported = tmp_path / "exported"
    result = titan("convert", "titan-to-hf", str(step), str(exported))  # args from job_config.toml
    assert result.returncode == 0, result.stderr
    from transformers import LlamaForCausalLM

    back = LlamaForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tokens = torch.randint(0, 2048, (2, 48))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, hf(tokens).logits, atol=1e-5, rtol=0)


def test_convert_errors_are_one_line(make_hf_model, tmp_path: Path) -> None:
    assert_user_error(
        titan("convert", "hf-to-titan", str(tmp_path / "nowhere"), str(tmp_path / "out")),
        "config.json",
    )
    _, hf_dir = make_hf_model()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert_user_error(
        titan("convert", "hf-to-titan", str(hf_dir), str(tmp_path / "full")), "not empty"
    )
    assert_user_error(
        titan("convert", "titan-to-hf", str(hf_dir), str(tmp_path / "o2")), "not a titan (DCP)"
    )


def test_run_refuses_a_checkpoint_of_another_model(make_hf_model, tmp_path: Path) -> None:
    """Before launch, a converted checkpoint whose args differ from the flavor is refused."""
    from titan.core.registry import ModelRegistry
    from titan.models.convert import convert_hf_to_titan
    from titan.models.plugin import titan_register_models

    registry = ModelRegistry()
    titan_register_models(registry)
    _, hf_dir = make_hf_model()
    convert_hf_to_titan(hf_dir, tmp_path / "c", registry)
    line = assert_user_error(
        titan("run", f"--checkpoint.initial_load_path={tmp_path / 'c'}", "--dry-run"),
        "holds a different model than llama3/debug",
        "--model.flavor=",
    )
    assert "titan_model.json" in line
    assert_user_error(
        titan("run", f"--checkpoint.initial_load_path={tmp_path / 'none'}", "--dry-run"),
        "not a checkpoint folder",
    )


def test_initial_load_rules(make_hf_model, registry, tmp_path: Path) -> None:
    """Loaded with checkpointing off; skipped once the run has a checkpoint of its own."""
    from titan.core.launch import prepare_job
    from titan.core.trainer import Trainer
    from titan.models.convert import convert_hf_to_titan
    from titan.models.dcp_files import load_model

    _, hf_dir = make_hf_model(vocab_size=2048, num_hidden_layers=1)
    convert_hf_to_titan(hf_dir, tmp_path / "c", registry)
    want = load_model(tmp_path / "c")
    base = {
        "model.flavor": str(tmp_path / "c" / "titan_model.json"),
        "checkpoint.initial_load_path": str(tmp_path / "c"),
        "training.mixed_precision_param": "float32",
        "training.seq_len": "32",
        "job.dump_folder": str(tmp_path / "run"),
    }

    def trainer(**extra: str) -> Trainer:
        return Trainer(prepare_job(None, overrides=list({**base, **extra}.items())))

    t = trainer()  # checkpoint.enable_checkpoint is false
    assert t.checkpointer.load(-1) == 0
    got = t.model.state_dict()
    assert sorted(got) == sorted(want)
    for name, tensor in got.items():
        assert torch.equal(tensor, want[name]), name
    own = trainer(**{"checkpoint.enable_checkpoint": "true"})
    with torch.no_grad():
        for p in own.model.parameters():
            p.fill_(0.5)
    own.checkpointer.save(3)
    again = trainer(**{"checkpoint.enable_checkpoint": "true"})
    assert again.checkpointer.load(-1) == 3  # its own checkpoint wins over the initial load
    assert all(torch.all(p == 0.5) for p in again.model.parameters())
