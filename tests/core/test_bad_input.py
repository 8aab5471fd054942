"""Bad input, as a new user makes it: exit code 2, one line, no traceback, nothing lost (issue 13).

Every row of ``CASES`` is one mistake. Each runs the real ``titan`` command in
this process (``titan.core.cli.main(argv)``: the console script's own entry
point, so exit code and output are what a user sees) in a workspace that
already holds a run's output; afterwards:

* the exit code is 2;
* stderr is exactly one ``error: ...`` line (titan's ``titan <model> backend=...``
  run header aside) and it holds the row's needles: the problem and the fix;
* nothing raised out of ``main`` and no ``Traceback`` was printed;
* every file of the workspace is byte-for-byte unchanged, and none was added.

Runs that get past a missed check would train for one tiny step and then fail
the "nothing written" assertion, so a check that goes missing is caught.
Only what needs a real multi-process launch (a rank error printed once) and
the time to the error as a user measures it run as subprocesses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_runs import titan_cli  # tests/ is on sys.path (tests/conftest.py)

from titan.core.testing import folder_snapshot as _snapshot
from titan.core.testing import titan_in_process as _in_process

REPO = Path(__file__).resolve().parents[2]
TINY = ("--training.steps=1", "--training.seq_len=32", "--training.local_batch_size=1")
# A deliberately non-UTF-8 TOML file (Latin-1 'é').
LATIN1_TOML = '[job]\ndescription = "caf\xe9"\n'.encode("latin-1")


@dataclass(frozen=True)
class Bad:
    """One mistake: the command line, files it needs, and words its error line must hold."""

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def run(*args: str) -> tuple[str, ...]:
    """``titan run ARGS`` into the workspace's existing dump folder, tiny if it ever trained."""
    keys = {a.split("=", 1)[0] for a in args}
    tiny = [t for t in (*TINY, "--job.dump_folder={dump}") if t.split("=", 1)[0] not in keys]
    return ("run", *args, *tiny)


def show(*args: str) -> tuple[str, ...]:
    return ("config", "show", *args)


TOML_BAD_SYNTAX = "[training\nsteps = 3\n"
CASES: list[Bad] = [
    # --- command line (typer/click parsing) -----------------------------------------
    Bad("cli-unknown-command", ("trian",), ("no such command 'trian'", "titan --help", "run")),
    Bad("cli-unknown-subcommand", ("config", "shwo"), ("no such command 'shwo'", "show")),
    Bad("cli-data-prepare-no-output", ("data", "prepare"), ("missing option '--output'", "usage")),
    Bad("cli-convert-no-args", ("convert", "hf-to-titan"), ("missing argument", "--help")),
    Bad("cli-convert-one-arg", ("convert", "titan-to-hf", "ckpt"), ("missing argument", "out")),
    Bad("cli-nproc-zero", ("run", "--nproc", "0"), ("'--nproc'", "greater than or equal to 1")),
    Bad("cli-nproc-abc", ("run", "--nproc", "abc"), ("'--nproc'", "integer")),
    Bad("cli-nnodes-zero", ("run", "--nnodes", "0"), ("'--nnodes'", "greater than or equal to 1")),
    Bad(
        "cli-dtype-int8",
        ("convert", "hf-to-titan", "a", "b", "--dtype", "int8"),
        ("'int8'", "'auto'", "'bfloat16'"),
    ),
    Bad(
        "cli-max-shard-zero",
        ("convert", "titan-to-hf", "a", "b", "--max-shard-gb", "0"),
        ("--max-shard-gb",),
    ),
    Bad("cli-misspelled-option", run("--nprocs", "2"), ("'--nprocs'", "did you mean '--nproc'")),
    Bad("cli-single-dash-option", run("-nproc", "2"), ("no such option", "--section.key=value")),
    Bad("cli-option-without-value", ("config", "show", "--plugins"), ("'--plugins'", "argument")),
    Bad("cli-unknown-option", ("plugins", "list", "--foo"), ("no such option: --foo", "--help")),
    Bad("cli-extra-argument", ("models", "list", "extra"), ("extra argument", "--help")),
    Bad(
        "cli-two-config-files",
        run("{in}/a.toml", "b.toml"),
        ("'b.toml'", "only one config file"),
        {"a.toml": "[training]\nsteps = 3\n"},
    ),
    Bad("cli-config-after-options", ("run", "--training.steps=3", "a.toml"), ("'a.toml'", "first")),
    Bad(
        "cli-override-without-dashes",
        run("training.steps=3"),
        ("did you mean the override '--training.steps=3'",),
    ),
    Bad("cli-override-without-key", run("--training=3"), ("'--training'", "--section.key")),
    # --- TOML files ----------------------------------------------------------------
    # relative to the folder titan runs in, as a user types it
    Bad("toml-missing-file", run("none.toml"), ("none.toml", "does not exist")),
    Bad("toml-directory", run("{ws}"), ("is a directory", ".toml file")),
    Bad(
        "toml-not-utf8",
        run("{in}/latin1.toml"),
        ("latin1.toml", "not UTF-8", "save it as UTF-8"),
        {"latin1.toml": LATIN1_TOML},
    ),
    Bad(
        "toml-syntax",
        run("{in}/bad.toml"),
        ("bad.toml", "not valid TOML", "line 1"),
        {"bad.toml": TOML_BAD_SYNTAX},
    ),
    Bad(
        "toml-duplicate-key",
        run("{in}/dup.toml"),
        ("dup.toml", "not valid TOML"),
        {"dup.toml": "[training]\nsteps = 3\nsteps = 4\n"},
    ),
    Bad(
        "toml-unknown-section",
        run("{in}/s.toml"),
        ("s.toml", "[trainin]", "did you mean [training]"),
        {"s.toml": "[trainin]\nsteps = 3\n"},
    ),
    Bad(
        "toml-unknown-key",
        run("{in}/k.toml"),
        ("k.toml", "training.stepz", "'training.steps'"),
        {"k.toml": "[training]\nstepz = 3\n"},
    ),
    Bad(
        "toml-wrong-type",
        run("{in}/t.toml"),
        ("t.toml", "'training.steps' expects an integer"),
        {"t.toml": '[training]\nsteps = "ten"\n'},
    ),
    Bad(
        "toml-key-in-wrong-section",
        run("{in}/w.toml"),
        ("w.toml", "'optimizer.lr'"),
        {"w.toml": "[training]\nlr = 0.1\n"},
    ),
    Bad(
        "toml-section-is-a-value",
        run("{in}/v.toml"),
        ("v.toml", "[section] table"),
        {"v.toml": "training = 3\n"},
    ),
    Bad(
        "toml-unknown-plugin",
        run("{in}/p.toml"),
        ("'fp9'", "[plugins] enabled of", "p.toml"),
        {"p.toml": '[plugins]\nenabled = ["fp9"]\n'},
    ),
    Bad(
        "toml-plugins-not-a-list",
        run("{in}/pl.toml"),
        ("pl.toml", "plugins.enabled", "a list"),
        {"pl.toml": '[plugins]\nenabled = "compile"\n'},
    ),
    Bad(
        "toml-unsupported-torchtitan",
        run("{in}/tt.toml"),
        ("tt.toml", "interval_type", 'set interval_type = "steps"'),
        {"tt.toml": '[checkpoint]\ninterval_type = "seconds"\n'},
    ),
    Bad(
        "toml-literal-choice",
        run("{in}/o.toml"),
        ("o.toml", "lr_scheduler.decay_type", "'cosine'"),
        {"o.toml": '[lr_scheduler]\ndecay_type = "exp"\n'},
    ),
    # --- values ----------------------------------------------------------------------
    Bad("value-steps-zero", run("--training.steps=0"), ("training.steps", "positive")),
    Bad("value-steps-text", run("--training.steps=ten"), ("training.steps", "an integer")),
    Bad("value-batch-negative", run("--training.local_batch_size=-1"), ("local_batch_size",)),
    Bad("value-seq-len-zero", run("--training.seq_len=0"), ("training.seq_len", "positive")),
    Bad("value-seq-len-too-long", run("--training.seq_len=100000"), ("max_seq_len", "lower")),
    Bad("value-lr-zero", run("--optimizer.lr=0"), ("optimizer.lr", "positive")),
    Bad(
        "value-optimizer-name",
        run("--optimizer.name=Lion"),
        ("no active plugin builds optimizer 'Lion'", "--optimizer.name=AdamW"),
    ),
    Bad(
        "value-optimizer-plugin-inactive",
        run("--optimizer.name=SGD"),  # examples/plugins/titan-mirror's sgd, installed, opt-in
        ("optimizer 'SGD' is built by plugin 'sgd', which is not active", "--plugins sgd"),
    ),
    Bad("value-warmup-negative", run("--lr_scheduler.warmup_steps=-1"), ("warmup_steps", "0 or")),
    Bad("value-decay-type", run("--lr_scheduler.decay_type=exp"), ("decay_type", "'cosine'")),
    Bad("value-log-freq-zero", run("--metrics.log_freq=0"), ("metrics.log_freq", "positive")),
    Bad("value-ckpt-interval-zero", run("--checkpoint.interval=0"), ("interval", "positive")),
    Bad("value-async-mode", run("--checkpoint.async_mode=sync"), ("async_mode", "'async'")),
    Bad("value-deterministic", run("--training.deterministic=maybe"), ("true or false",)),
    Bad("value-precision", run("--training.mixed_precision_param=fp16"), ("'bfloat16'",)),
    Bad("value-reshard", run("--parallelism.fsdp_reshard_after_forward=x"), ("'always'",)),
    Bad("value-dump-folder-empty", ("run", *TINY, "--job.dump_folder="), ("dump_folder", "empty")),
    Bad("value-unknown-key", run("--training.stepz=3"), ("training.stepz", "'training.steps'")),
    Bad("value-unknown-section", run("--trainin.steps=3"), ("[trainin]", "[training]")),
    Bad("value-unknown-model", run("--model.name=llama4"), ("'llama4'", "model.name")),
    Bad("value-unknown-flavor", run("--model.flavor=9B"), ("'9B'", "8B", "model.flavor")),
    Bad("value-missing-args-file", run("--model.flavor=nope.json"), ("nope.json", "not exist")),
    Bad("value-show-too", show("--training.steps=ten"), ("training.steps", "an integer")),
    # --- plugins ---------------------------------------------------------------------
    Bad(
        "plugin-unknown",
        run("--plugins", "fp9"),
        ("unknown plugin 'fp9'", "available plugins", "--plugins"),
    ),
    Bad("plugin-typo", run("--plugins", "compil"), ("'compil'", "did you mean 'compile'")),
    Bad("plugin-unknown-in-override", run("--plugins.enabled=fp9"), ("'fp9'", "--plugins.enabled")),
    Bad("plugin-requested-and-blocked", run("--plugins", "ac,no:ac"), ("'ac'", "no:ac")),
    Bad("plugin-fp8-ag-one-process", run("--plugins", "fp8-ag"), ("fp8-ag", "--nproc 2")),
    Bad(
        "plugin-fp8-ag-rowwise",
        run("--nproc", "2", "--plugins", "fp8-ag", "--fp8.recipe_name=rowwise"),
        ("tensorwise", "fp8-ag"),
    ),
    Bad("plugin-section-key", run("--plugins", "compile", "--compile.modee=x"), ("compile.mode",)),
    Bad("plugin-unknown-blocked", run("--plugins", "no:fsdpp"), ("'fsdpp'", "did you mean 'fsdp'")),
    # --- parallelism and launch --------------------------------------------------------
    Bad(
        "par-tp-larger-than-world",
        run("--nproc", "2", "--parallelism.tensor_parallel_degree=4"),
        ("tensor_parallel_degree 4", "--nproc 4"),
    ),
    Bad(
        "par-no-fsdp-two-ranks",
        run("--nproc", "2", "--plugins", "no:fsdp"),
        ("no:fsdp", "--nproc 1"),
    ),
    Bad(
        "par-tp-blocked",
        run("--parallelism.tensor_parallel_degree=2", "--plugins", "no:tp"),
        ("no:tp", "set the degree to 1"),
    ),
    Bad(
        "par-replicate-not-dividing",
        run("--nproc", "3", "--parallelism.data_parallel_replicate_degree=2"),
        ("not divisible", "--nproc"),
    ),
    Bad(
        "par-degrees-product",
        run("--nproc", "2", "--parallelism.data_parallel_shard_degree=3"),
        ("= 3", "2 processes"),
    ),
    Bad("par-tp-zero", run("--parallelism.tensor_parallel_degree=0"), ("1 or more",)),
    Bad(
        "par-global-batch",
        run("--nproc", "2", "--training.global_batch_size=3"),
        ("global_batch_size 3", "change one of them"),
    ),
    Bad("launch-nnodes-no-endpoint", run("--nnodes", "2"), ("--launch.rdzv_endpoint=HOST:PORT",)),
    Bad("launch-max-restarts", run("--nproc", "2", "--launch.max_restarts=-1"), ("max_restarts",)),
    # --- data --------------------------------------------------------------------------
    Bad(
        "data-missing-path", run("--training.dataset_path={ws}/none"), ("not found", "dataset_path")
    ),
    Bad(
        "data-empty-folder",
        run("--training.dataset_path={in}/empty"),
        ("no data files",),
        {"empty/README": "not data"},
    ),
    Bad(
        "data-mixed-formats",
        run("--training.dataset_path={in}/mixed"),
        ("one format",),
        {"mixed/a.jsonl": '{"text": "a"}\n', "mixed/b.csv": "text\nb\n"},
    ),
    Bad("data-weights-count", run("--data.weights=1,2"), ("data.weights", "one weight per source")),
    Bad("data-weights-negative", run("--data.weights=-1"), ("data.weights", "positive")),
    Bad("data-weights-text", run("--data.weights=heavy"), ("data.weights", "a number")),
    Bad("data-num-workers", run("--data.num_workers=-1"), ("num_workers", "0 or more")),
    Bad("data-sample-by", run("--data.text_sample_by=word"), ("text_sample_by", "'line'")),
    Bad(
        "data-validation-interval",
        run("--validation.enable", "--validation.eval_interval=0"),
        ("eval_interval", "positive"),
    ),
    Bad(
        "data-validation-steps",
        run("--validation.enable", "--validation.steps=0"),
        ("validation.steps", "-1"),
    ),
    Bad(
        "data-no-validation-split",
        run("--validation.enable", "--training.dataset_path={in}/one.jsonl"),
        ("single file", "validation.dataset_path"),
        {"one.jsonl": '{"text": "one document"}\n'},
    ),
    Bad(
        "data-hub-unreachable",
        run("--training.dataset=allenai/c4", "--data.hub_config=en"),
        ("allenai/c4", "cannot be reached", "dataset_path"),
        env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
    ),
    # --- tokenizer ---------------------------------------------------------------------
    Bad("tok-missing", run("--model.tokenizer_path={ws}/none.json"), ("none.json", "not exist")),
    Bad(
        "tok-empty-folder",
        run("--model.tokenizer_path={in}/tokdir"),
        ("holds none of",),
        {"tokdir/notes.txt": "no tokenizer here"},
    ),
    Bad(
        "tok-broken-json",
        run("--model.tokenizer_path={in}/tok.json"),
        ("tok.json", "tokenizer"),
        {"tok.json": "{broken"},
    ),
    Bad(
        "tok-garbage-model",
        run("--model.tokenizer_path={in}/tok.model"),
        ("tok.model",),
        {"tok.model": bytes(range(256)) * 8},
    ),
    Bad("tok-vocab-too-small", run("--model.vocab_size=100"), ("2048 tokens", "vocab_size=2048")),
    # --- checkpoints (a real checkpoint: step 1 intact, step 2 cut short) -------------------
    Bad(
        "ckpt-damaged",
        run("--checkpoint.enable_checkpoint", "--training.steps=3", "--job.dump_folder={ckpt}"),
        ("step-2", "damaged", "--checkpoint.load_step=1"),
    ),
    Bad(
        "ckpt-missing-step",
        run(
            "--checkpoint.enable_checkpoint", "--checkpoint.load_step=7", "--job.dump_folder={ckpt}"
        ),
        ("step 7", "have: 1, 2", "load_step"),
    ),
    Bad(
        "ckpt-other-model",
        run(
            "--checkpoint.enable_checkpoint",
            "--checkpoint.load_step=1",
            "--training.steps=3",
            "--model.name=llama2",
            "--job.dump_folder={ckpt}",
        ),
        ("step-1", "does not fit this job"),
    ),
    Bad(
        "ckpt-load-step-none-saved",
        run(
            "--checkpoint.enable_checkpoint",
            "--checkpoint.load_step=3",
            "--checkpoint.folder=none-here",
        ),
        ("load_step is 3", "no complete checkpoint", "load_step = -1"),
    ),
    Bad(
        "ckpt-initial-missing",
        run("--checkpoint.initial_load_path={ws}/none"),
        ("initial_load_path",),
    ),
    # --- backends ------------------------------------------------------------------------
    Bad("backend-unknown", run("--backend", "nope"), ("unknown backend 'nope'", "--backend")),
    Bad("backend-typo", run("--backend", "locl"), ("did you mean 'local'",)),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a run's output: a dump folder, and one with a real, damaged checkpoint."""
    ws = tmp_path_factory.mktemp("bad_input")
    dump = ws / "dump"
    (dump / "checkpoint" / "step-1").mkdir(parents=True)
    (dump / "metrics.jsonl").write_text('{"step": 1, "loss": 7.5}\n')
    (dump / "job_config.toml").write_text('[job]\ndescription = "an earlier run"\n')
    (dump / "checkpoint" / "step-1" / ".metadata").write_bytes(b"written by an earlier run")
    ckpt = ws / "ckpt"
    code = _in_process(
        "run",
        *TINY,
        "--training.steps=2",
        "--checkpoint.enable_checkpoint",
        "--checkpoint.interval=1",
        f"--job.dump_folder={ckpt}",
    )[0]
    assert code == 0
    shard = next((ckpt / "checkpoint" / "step-2").glob("*.distcp"))
    with shard.open("r+b") as f:  # cut short, as by a full disk or an interrupted copy
        f.truncate(shard.stat().st_size // 2)
    return ws


def _error_lines(stderr: str) -> list[str]:
    """stderr without titan's run header (``titan llama3/debug backend=local ...``) and without
    the notes on what a rerun finds in its folder (metrics rows, checkpoints; printed before
    launch, so they precede an error that only the run itself can find)."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip()
        and not (line.startswith("titan ") and " backend=" in line)
        and not (
            line.startswith("note: ")
            and any(s in line for s in ("metrics.jsonl", "holds checkpoints", "continues the run"))
        )
    ]


def test_no_row_of_the_table_repeats_another() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.argv for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Bad, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = workspace / "inputs" / case.id
    for name, content in case.files.items():
        path = inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    inputs.mkdir(parents=True, exist_ok=True)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(workspace)  # a run that wrongly starts writes here: caught below
    before = _snapshot(workspace)
    argv = [
        a.format(ws=workspace, dump=workspace / "dump", ckpt=workspace / "ckpt", **{"in": inputs})
        for a in case.argv
    ]

    started = time.perf_counter()
    code, stdout, stderr = _in_process(*argv)
    elapsed = time.perf_counter() - started

    assert "Traceback" not in stdout + stderr, stderr
    lines = _error_lines(stderr)
    assert code == 2, f"exit {code}\n{stderr}"
    assert len(lines) == 1, stderr  # one line, no warnings or notes around it
    assert lines[0].startswith("error: "), lines[0]
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not stdout.strip(), stdout
    assert _snapshot(workspace) == before  # nothing written, nothing changed
    print(f"{case.id}: {elapsed:.2f} s")


# --- as a user runs it: subprocesses ---------------------------------------------------------

# One config-only mistake of each kind; each must be reported without importing torch
# (so before any process or model is built) and quickly.
TIMED = {
    "cli": ["trian"],
    "toml": ["run", "{in}/k.toml"],
    "value": ["run", "--training.steps=0"],
    "plugin": ["run", "--plugins", "fp9"],
    "parallelism": ["run", "--nproc", "2", "--parallelism.tensor_parallel_degree=4"],
    "launch": ["run", "--nproc", "2", "--plugins", "no:fsdp"],
    "data": ["run", "--training.dataset_path=/no/such/folder"],
    "tokenizer": ["run", "--model.vocab_size=100"],
    "backend": ["run", "--backend", "nope"],
}
_PROBE = (
    "import sys, time\n"
    "t = time.perf_counter()\n"
    "from titan.core.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "print(code, 'torch' in sys.modules, time.perf_counter() - t)\n"
)


def test_config_errors_arrive_before_anything_is_built(tmp_path: Path) -> None:
    """Under 3 s on an idle 2-core machine (measured here and printed); asserted: no torch
    import (nothing built, no process started) and a bound that holds on a loaded machine."""
    (tmp_path / "k.toml").write_text("[training]\nstepz = 3\n")
    figures = {}
    for kind, args in TIMED.items():
        argv = [a.format(**{"in": tmp_path}) for a in args]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, *argv, f"--job.dump_folder={tmp_path / 'd'}"]
            if argv[0] == "run"
            else [sys.executable, "-c", _PROBE, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        wall = time.perf_counter() - started
        code, torch_imported, _ = proc.stdout.split()
        assert code == "2", proc.stderr
        assert torch_imported == "False", f"{kind}: torch was imported before the error"
        assert len(_error_lines(proc.stderr)) == 1, proc.stderr
        figures[kind] = wall
    print(
        "seconds to the error, per kind: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
    )
    assert not (tmp_path / "d").exists()
    assert max(figures.values()) < 30, figures  # 3 s idle; generous for a shared, loaded machine


def test_rank_error_is_printed_once_without_torchrun_traceback(
    workspace: Path, tmp_path: Path
) -> None:
    """Two ranks both fail to load the damaged checkpoint: one line, exit 2, no ChildFailedError."""
    dump = tmp_path / "ckpt"
    shutil.copytree(workspace / "ckpt", dump)
    before = _snapshot(dump)
    proc = titan_cli(
        "run",
        "--nproc",
        "2",
        *TINY,
        "--training.steps=3",
        "--checkpoint.enable_checkpoint",
        f"--job.dump_folder={dump}",
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, proc.stderr
    assert "step-2" in errors[0] and "--checkpoint.load_step=1" in errors[0]
    assert errors[0].startswith("rank ") and "extraInfo" not in errors[0], errors[0]
    assert "[rank" not in proc.stderr, proc.stderr  # no per-rank library warnings either
    changed = {k for k, v in _snapshot(dump).items() if before.get(k) != v}
    assert changed <= {"job_config.toml"}, changed  # the checkpoints are untouched


def test_more_cpu_ranks_than_cores_is_a_warning(tmp_path: Path) -> None:
    """Accepted (it runs), but not silently: one warning line naming a better --nproc."""
    cores = os.cpu_count() or 1
    code, stdout, stderr = _in_process(
        "run", "--nproc", str(cores * 4), "--dry-run", f"--job.dump_folder={tmp_path / 'd'}"
    )
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, stderr
    assert f"--nproc {cores * 4}" in warnings[0] and f"--nproc {cores} or less" in warnings[0]
    assert "titan.backends.local.torchrun_agent" in stdout  # the dry run still shows what would run
