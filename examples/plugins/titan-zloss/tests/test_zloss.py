"""The z-loss plugin, tested the way a plugin author tests one: with titan's ``titan_runner``.

A probe plugin (installed for these runs only, with ``titan_runner.add_plugin``) saves
the logits and labels of step 1's micro-batches; the expected loss is then computed by
hand from them, in float64, and compared with what the run logged.
"""

from __future__ import annotations

import torch

from titan.core.testing import TitanResult, TitanRunner

WEIGHT = 0.01  # large enough to move the loss well past float32 rounding

PROBE = '''
"""probe: saves step 1's logits and labels (every micro-batch) for a hand computation."""
from titan.core import hookimpl

_seen = []


@hookimpl
def titan_loss_terms(trainer, logits, labels):
    if trainer.step == 1:
        full = logits.full_tensor() if hasattr(logits, "full_tensor") else logits
        _seen.append((full.detach().cpu(), labels.cpu()))
    return {}


@hookimpl
def titan_step_end(trainer, step):
    import torch

    if step == 1 and trainer.parallel.is_main:
        torch.save(_seen, trainer.dump_folder / "probe.pt")
'''

FP32 = ("--training.mixed_precision_param=float32", "--training.steps=1")


def _hand_loss(result: TitanResult, weight: float) -> tuple[float, float]:
    """(cross-entropy + z-loss, z-loss) of step 1, by hand from the probe's tensors."""
    micro_batches = torch.load(result.dump_folder / "probe.pt")
    ce, z = 0.0, 0.0
    for logits, labels in micro_batches:
        x = logits.double()
        log_z = torch.log(torch.exp(x).sum(dim=-1))  # the normaliser, no tricks
        log_p = x.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - log_z
        ce += float(-log_p.mean()) / len(micro_batches)
        z += weight * float((log_z**2).mean()) / len(micro_batches)
    return ce + z, z


def _check_step_1(result: TitanResult, weight: float, rel: float) -> None:
    result.assert_ok()
    expected_loss, expected_z = _hand_loss(result, weight)
    logged = result.metrics[0]
    assert logged["step"] == 1
    assert abs(logged["z_loss"] - expected_z) <= rel * expected_z, (logged, expected_z)
    assert abs(logged["loss"] - expected_loss) <= rel * expected_loss, (logged, expected_loss)
    assert expected_z > 1e-3 * expected_loss  # the term is really there, not lost in rounding


def _runner(titan_runner: TitanRunner) -> TitanRunner:
    titan_runner.add_plugin("probe", PROBE)
    return titan_runner


def test_listed_with_distribution_and_version(titan_runner: TitanRunner) -> None:
    listing = titan_runner.titan("plugins", "list").assert_ok().stdout
    row = next(line for line in listing.splitlines() if "│ zloss " in line)
    assert "titan-example-zloss" in row and "0.1.0" in row and "opt-in" in row
    assert "loss_terms" in row


def test_adds_the_documented_amount_with_gradient_accumulation(titan_runner: TitanRunner) -> None:
    """Two micro-batches per step: the term is averaged like the cross-entropy."""
    result = _runner(titan_runner).run(
        *FP32,
        "--plugins=zloss,probe",
        f"--zloss.weight={WEIGHT}",
        "--training.global_batch_size=4",  # local_batch_size 2: 2 micro-batches
    )
    _check_step_1(result, WEIGHT, rel=1e-5)
    assert len(torch.load(result.dump_folder / "probe.pt")) == 2


def test_config_keys_from_the_command_line(titan_runner: TitanRunner) -> None:
    shown = titan_runner.titan("config", "show", "--plugins=zloss", "--zloss.weight=0.5")
    assert "[zloss]\nweight = 0.5\n" in shown.assert_ok().stdout
    for bad, needle in (("-1", "cannot be negative"), ("heavy", "zloss.weight")):
        result = titan_runner.run("--plugins=zloss", f"--zloss.weight={bad}")
        assert result.returncode == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_works_with_compile(titan_runner: TitanRunner) -> None:
    result = _runner(titan_runner).run(
        *FP32, "--plugins=zloss,probe,compile", f"--zloss.weight={WEIGHT}"
    )
    assert "compile:" in result.stderr
    _check_step_1(result, WEIGHT, rel=1e-5)


def test_works_with_tensor_parallel_on_two_ranks(titan_runner: TitanRunner) -> None:
    """Loss parallel: the logits stay sharded over the vocabulary; the term is gathered."""
    result = _runner(titan_runner).run(
        *FP32,
        "--nproc=2",
        "--parallelism.tensor_parallel_degree=2",
        "--plugins=zloss,probe",
        f"--zloss.weight={WEIGHT}",
    )
    assert "loss parallel" in result.stderr
    _check_step_1(result, WEIGHT, rel=1e-5)
