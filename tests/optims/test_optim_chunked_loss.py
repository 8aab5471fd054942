"""chunked-loss: the output projection + cross-entropy chunk by chunk equals the plain computation.

The reference is always the plain path: ``torch.nn.functional.cross_entropy``
of the materialised logits (function level), and titan's own default loss
through a Trainer built the same way without the plugin (1 rank, compile,
FSDP on 2 ranks, TP on 2 ranks with loss parallel). Everything runs in
float32, where the only difference is the order of the sums: the loss must
agree within 1e-6 relative and the gradients within float32 tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402
from cli_runs import titan_cli  # noqa: E402  (tests/ is on sys.path)

LOSS_RTOL = 1e-6
GRAD = {"rtol": 1e-4, "atol": 1e-6}


@pytest.mark.parametrize("chunk", [0, 1, 7, 64, 1000])
def test_function_matches_materialised_logits(chunk: int) -> None:
    from titan.optims.chunked_cross_entropy import ChunkedCrossEntropy

    torch.manual_seed(0)
    head = torch.nn.Linear(48, 301, bias=False)
    hidden = torch.randn(3, 41, 48, requires_grad=True)
    labels = torch.randint(0, 301, (3, 41))
    labels[0, :5] = -100  # ignored tokens (cross_entropy's ignore_index) count for neither side
    ref = F.cross_entropy((hidden @ head.weight.T).flatten(0, 1), labels.flatten())
    ref_h, ref_w = torch.autograd.grad(ref, (hidden, head.weight))

    loss = ChunkedCrossEntropy(head, chunk)(hidden, labels)
    # A scaled loss (gradient accumulation divides by the micro-batches) scales the gradients.
    got_h, got_w = torch.autograd.grad(loss / 4, (hidden, head.weight))
    assert abs(loss.item() - ref.item()) <= LOSS_RTOL * abs(ref.item())
    torch.testing.assert_close(got_h * 4, ref_h, **GRAD)
    torch.testing.assert_close(got_w * 4, ref_w, **GRAD)
    with torch.no_grad():  # validation: no gradient buffers, same value
        assert ChunkedCrossEntropy(head, chunk)(hidden, labels).item() == loss.item()


def one_rank_loss_and_grads(tmp_path: Path, plugins: list[str], overrides=()) -> tuple:
    torch.manual_seed(0)
    trainer = h.build_trainer(tmp_path, plugins, [("training.seq_len", "128"), *overrides])
    tokens = torch.randint(
        0, trainer.model_args.vocab_size, (2, 129), generator=torch.Generator().manual_seed(5)
    )
    with trainer.autocast():
        out = trainer.model(tokens[:, :-1])
    loss, _ = trainer.compute_loss(out, tokens[:, 1:])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    return loss.item(), grads, out.shape


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(([], []), id="eager"),
        pytest.param(
            (["compile"], [("compile.model", "false"), ("compile.loss", "true")]), id="compile"
        ),
    ],
)
def test_one_rank_equals_plain_loss(tmp_path: Path, extra: tuple) -> None:
    plugins, overrides = extra
    plain_loss, plain, plain_shape = one_rank_loss_and_grads(tmp_path / "plain", plugins, overrides)
    loss, grads, shape = one_rank_loss_and_grads(  # 256 tokens: chunks of 96, 96 and 64
        tmp_path / "chunked",
        [*plugins, "chunked-loss"],
        [*overrides, ("chunked_loss.chunk_tokens", "96")],
    )
    assert plain_shape[-1] == 2048 and shape[-1] == 256  # logits vs the hidden states passed on
    assert abs(loss - plain_loss) <= LOSS_RTOL * abs(plain_loss), (loss, plain_loss)
    assert grads.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], **GRAD, msg=name)


def test_two_ranks_fsdp_and_tp_equal_plain_loss(tmp_path: Path) -> None:
    base = [list(kv) for kv in h.TINY]
    found = h.run_probe(
        tmp_path,
        2,
        {
            # 128 tokens per rank: chunks of 48, 48 and 32
            "fsdp": {"plugins": [], "overrides": base, "chunk_tokens": 48},
            "fsdp_reshard_always": {
                "plugins": [],
                "overrides": [*base, ["parallelism.fsdp_reshard_after_forward", "always"]],
                "chunk_tokens": 48,
            },
            "tp_loss_parallel": {
                "plugins": ["tp"],
                "overrides": [*base, ["parallelism.tensor_parallel_degree", "2"]],
                "chunk_tokens": 48,
            },
        },
        probe=h.HERE / "chunked_probe.py",
    )
    for name in ("fsdp", "fsdp_reshard_always", "tp_loss_parallel"):
        f = found[name]
        assert abs(f["chunked_loss"] - f["plain_loss"]) <= LOSS_RTOL * abs(f["plain_loss"]), f
        bad = {k: g for k, g in f["grads"].items() if not g["allclose"]}
        assert not bad, (name, bad)
        assert len(f["grads"]) == 3 + 6 * 9  # embeddings, norm, output + 9 per block


def test_hundred_steps_track_the_plain_run(tmp_path: Path) -> None:
    runs = {}
    for name, plugins in (("plain", ""), ("chunked", "chunked-loss")):
        out = tmp_path / name
        args = [
            *h.overrides_to_args(h.TINY),
            "--training.seq_len=32",
            "--training.steps=100",
            f"--job.dump_folder={out}",
        ]
        proc = titan_cli("run", *(["--plugins", plugins] if plugins else []), *args, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = [m["loss"] for m in h.read_metrics(out) if "loss" in m]
    assert len(runs["plain"]) == len(runs["chunked"]) == 100
    worst = max(abs(a - b) / a for a, b in zip(runs["plain"], runs["chunked"], strict=True))
    assert worst < 1e-4, worst
    assert runs["chunked"][-1] < runs["chunked"][0] - 1.0  # and it learns


def test_logit_reading_plugin_is_refused(tmp_path: Path) -> None:
    """Found when the model is built (which plugin reads logits is known only there):
    the run's banner line, then the refusal, exit 2, no traceback."""
    proc = titan_cli(
        "run",
        "--plugins",
        "chunked-loss,zloss",
        "--training.steps=1",
        f"--job.dump_folder={tmp_path}",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "chunked-loss" in line and "'zloss'" in line and "remove one" in line, line
    assert not (tmp_path / "metrics.jsonl").exists()
