"""``titan plot RUN_DIR [RUN_DIR ...]``: loss and throughput of runs side by side, as a PNG.

The pictures a comparison of configurations needs (loss curves of baseline,
compile, fp8... on one axis, tokens/s per device over steps, and the median
throughput as bars), drawn from each run's ``metrics.jsonl``. matplotlib is
imported inside the command, so ``titan --help`` does not pay for it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from titan.core import hookimpl
from titan.core.errors import ConfigError

AUTOLOAD = True


def read_run(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (the training steps; off-schedule ones too)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no metrics.jsonl; pass the job.dump_folder of a run that logged steps"
        )
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise ConfigError(f"{path}:{n} is not JSON; is this a titan metrics.jsonl?") from None
    records = [r for r in records if isinstance(r.get("loss"), int | float)]
    if not records:
        raise ConfigError(f"{path} holds no logged loss yet; plot it once the run has logged")
    return records


def plot_runs(runs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Draw loss, tokens/s per device and median tokens/s per run into ``out`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = draw(runs, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw(runs: list[Path], labels: list[str] | None = None) -> Any:
    """The figure: loss curves, tokens/s per device over steps, median tokens/s as bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed on a cluster login node
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = [read_run(r) for r in runs]
    labels = labels or _labels(runs)
    fig, (ax_loss, ax_tps, ax_bar) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [2, 2, 1.2]}
    )
    medians = []
    for label, records in zip(labels, data, strict=True):
        steps = [r["step"] for r in records]
        ax_loss.plot(steps, [r["loss"] for r in records], label=label, linewidth=1.5)
        if any("val_loss" in r for r in records):
            val = [r for r in records if "val_loss" in r]
            ax_loss.plot(
                [r["step"] for r in val], [r["val_loss"] for r in val], "--", label=f"{label} (val)"
            )
        tps = [r for r in records if r.get("step", 0) > 1 and "tokens_per_second" in r]
        tps = tps or [r for r in records if "tokens_per_second" in r]
        ax_tps.plot([r["step"] for r in tps], [r["tokens_per_second"] for r in tps], label=label)
        medians.append(statistics.median(r["tokens_per_second"] for r in tps) if tps else 0.0)
    ax_loss.set(title="loss", xlabel="step", ylabel="loss")
    ax_tps.set(title="tokens/s per device (step 1 left out)", xlabel="step", ylabel="tokens/s")
    bars = ax_bar.bar(range(len(labels)), medians, color=[f"C{i}" for i in range(len(labels))])
    ax_bar.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], fontsize=8)
    ax_bar.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax_bar.set(title="median tokens/s per device")
    for ax in (ax_loss, ax_tps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def _labels(runs: list[Path]) -> list[str]:
    """Folder names; the full path where two runs share a name."""
    names = [r.resolve().name or str(r) for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def plot_command(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders (job.dump_folder) to compare.", metavar="RUN_DIR"),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="PNG file to write.", metavar="PNG")
    ] = Path("titan-plot.png"),
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            help="A name per run, in order (default: folder names).",
            metavar="NAME",
        ),
    ] = None,
) -> None:
    """Loss and tokens/s curves of one or more runs, side by side, into a PNG."""
    if label and len(label) != len(runs):
        raise ConfigError(f"{len(label)} --label for {len(runs)} runs; give one per run or none")
    path = plot_runs(runs, out, label or None)
    typer.echo(f"wrote {path}")


@hookimpl
def titan_add_commands(app: typer.Typer) -> None:
    app.command("plot")(plot_command)
