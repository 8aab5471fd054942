"""The five plugins together: listed, torch-free to load, composed in a fixed order whatever
the order given, refused before launch where they cannot work, and run as `titan run` on 2 ranks."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optim_helpers as h  # noqa: E402

from titan.core.errors import TitanError  # noqa: E402
from titan.core.launch import prepare_job  # noqa: E402

FIVE = ("compile", "fp8", "fp8-ag", "ac", "tp")
SHORT = [*h.overrides_to_args(h.TINY), "--training.steps=2"]


def test_plugins_list_shows_all_five() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "titan.core.cli", "plugins", "list"],
        capture_output=True,
        text=True,
        check=True,
        env={**h.rank_env(), "COLUMNS": "250"},
    ).stdout
    for name in FIVE:
        assert f"│ {name} " in out, (name, out)
    assert "titan-optims" in out


def test_plugin_modules_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import titan.optims.compile, titan.optims.fp8, titan.optims.fp8_allgather\n"
        "import titan.optims.activation_checkpointing, titan.optims.tensor_parallel\n"
        "assert 'torch' not in sys.modules, 'a plugin imported torch at module level'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_order_given_does_not_matter() -> None:
    """Any order of --plugins gives the same active set and the same effective config."""
    configs = set()
    for order in itertools.permutations(["tp", "ac", "compile"]):
        job = prepare_job(None, plugins=list(order), overrides=[("launch.nproc_per_node", "2")])
        configs.add((frozenset(job.plugins.active), job.effective_toml()))
    assert len(configs) == 1


REFUSED = [
    (["fp8-ag"], [("fp8.recipe_name", "rowwise")], "needs fp8.recipe_name = 'tensorwise'"),
    (["fp8-ag"], [("launch.nproc_per_node", "1")], "does not shard them"),
    (["fp8-ag", "tp"], [("parallelism.tensor_parallel_degree", "2")], "does not shard them"),
    (["tp"], [("launch.nproc_per_node", "1")], "tensor_parallel_degree is 1"),
    (["compile", "tp"], [("compile.loss", "true")], "loss-parallel"),
    (["ac"], [("ac.mode", "none")], "ac.mode is 'none'"),
    (["fp8-ag", "no:fp8"], [], "both requested and blocked"),
]


@pytest.mark.parametrize(("plugins", "overrides", "why"), REFUSED)
def test_refused_before_launch_with_the_reason(plugins: list, overrides: list, why: str) -> None:
    with pytest.raises(TitanError, match=why) as err:
        prepare_job(None, plugins=plugins, overrides=[("launch.nproc_per_node", "2"), *overrides])
    assert ";" in str(err.value)  # the problem; then the fix


def test_every_combination_validates_or_is_refused_with_a_reason() -> None:
    """All 31 non-empty subsets on 2 processes: validated, or one clear TitanError each."""
    outcomes = {}
    for n in range(1, 6):
        for combo in itertools.combinations(FIVE, n):
            try:
                prepare_job(None, plugins=list(combo), overrides=[("launch.nproc_per_node", "2")])
                outcomes[combo] = "ok"
            except TitanError as exc:
                assert ";" in str(exc), exc
                outcomes[combo] = str(exc)
    # only fp8-ag with tp on 2 processes is refused: TP takes both, nothing left to shard
    refused = {c for c, o in outcomes.items() if o != "ok"}
    assert refused == {c for c in outcomes if "fp8-ag" in c and "tp" in c}
    assert all("does not shard them" in outcomes[c] for c in refused)


def test_titan_run_compile_fp8_fp8ag_on_two_ranks(tmp_path: Path) -> None:
    proc = h.run_titan(
        ["--nproc", "2", "--plugins", "compile,fp8,fp8-ag", f"--job.dump_folder={tmp_path}", *SHORT]
    )
    notes = proc.stderr
    assert "fp8: 42 of 43 linear layers" in notes and "fp8-ag: FSDP all-gathers" in notes
    assert "compile: 6 transformer blocks compiled" in notes
    assert [r["step"] for r in h.read_metrics(tmp_path)] == [1, 2]


def test_titan_run_tp_ac_compile_on_two_ranks(tmp_path: Path) -> None:
    """Given as ac,compile,tp: built in the fixed order tp -> ac -> compile all the same."""
    proc = h.run_titan(
        ["--nproc", "2", "--plugins", "ac,compile,tp", f"--job.dump_folder={tmp_path}", *SHORT]
    )
    err = proc.stderr
    order = [err.index(s) for s in ("note: tp: tensor parallel", "note: ac: ", "note: compile: ")]
    assert order == sorted(order), err
    assert [r["step"] for r in h.read_metrics(tmp_path)] == [1, 2]
