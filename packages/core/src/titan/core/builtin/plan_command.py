"""``titan plan``: a job's memory per device, speed, time and cost, before it launches.

Takes the arguments of ``titan run`` (CONFIG.toml, ``--plugins``,
``--backend``, ``--nproc``, ``--nnodes``, ``--section.key=value``), asks the
backend where the job would run (``layout(job, offline=True)``: no cluster
or cloud call), checks the job as ``titan run`` does
(:func:`titan.core.checks.check_job`) and prints
:func:`titan.core.memory_plan.plan_memory` and
:func:`titan.core.speed_plan.plan_speed` as a table (``--json``: one JSON
object).

A plan is printed even when the job does not fit: the check that refuses a
job whose training state alone does not fit the device is caught (the plan
says so and shows by how much), and the peak is compared with the device's
memory here. Every other mistake (degrees, batch, plugins) stops as in
``titan run``: its plan would describe a job that cannot run. Exit code: 0
when the peak fits (or the device's memory is unknown), 1 when it does not,
2 for a mistake in the job.

Torch-free: nothing here, in the plans or in the checks imports torch.
"""

# No `from __future__ import annotations`: typer reads the command's annotations at run time.
import json
from typing import Annotated, Any

from titan.core import hookimpl

AUTOLOAD = True

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def make_plan(
    config_path: Any,
    plugins: list[str],
    overrides: list[tuple[str, str]],
    backend: str = "local",
    tokens: int | None = None,
    price_per_hour: float | None = None,
    spot_discount: float | None = None,
) -> dict[str, Any]:
    """The plan of a job given as ``titan run`` takes it: {job, layout, memory, speed, refusal}."""
    from titan.core.checks import check_job
    from titan.core.errors import DoesNotFit
    from titan.core.launch import prepare_job
    from titan.core.memory_plan import plan_memory
    from titan.core.speed_plan import plan_speed

    job = prepare_job(config_path, plugins, overrides, validate=False)
    chosen = job.backends.get(backend)
    layout = job.backends.layout(chosen, job, offline=True)
    refusal = None
    try:
        check_job(job, layout)
    except DoesNotFit as exc:  # every other check passed: still plan, and say so
        refusal = str(exc)
    memory = plan_memory(job, layout)
    speed = plan_speed(job, layout, tokens, price_per_hour, spot_discount)
    return {
        "job": job,
        "backend": chosen.name,
        "layout": layout,
        "memory": memory,
        "speed": speed,
        "refusal": refusal,
    }


def plan_json(plan: dict[str, Any]) -> dict[str, Any]:
    job, layout = plan["job"], plan["layout"]
    c = job.config
    from titan.core.checks import degrees

    dp_rep, dp_shard, tp = degrees(c, layout)
    return {
        "model": f"{c.model.name}/{c.model.flavor}",
        "backend": plan["backend"],
        "where": layout.where,
        "nodes": layout.nodes,
        "processes_per_node": layout.procs_per_node,
        "degrees": {"dp_replicate": dp_rep, "dp_shard": dp_shard, "tp": tp},
        "plugins": sorted(n for n in job.plugins.active if not job.plugins.infos[n].autoload),
        "local_batch_size": c.training.local_batch_size,
        "seq_len": c.training.seq_len,
        "memory": plan["memory"].to_dict(),
        "speed": plan["speed"].to_dict(),
        "fits": plan["memory"].fits,
        "refusal": plan["refusal"],
    }


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:,.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{seconds / 60:,.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"


def _count(n: float) -> str:
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:,.3g}{suffix}"
    return f"{n:,.0f}"


def print_plan(plan: dict[str, Any], console: Any) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    job, layout, mem, speed = plan["job"], plan["layout"], plan["memory"], plan["speed"]
    info = plan_json(plan)
    c = job.config
    deg = info["degrees"]
    plugins = ", ".join(info["plugins"]) or "(none)"
    console.print(
        f"[bold]titan plan[/] {escape(info['model'])} ({mem.parameters / 1e9:,.2f}B parameters) "
        f"on {escape(layout.where)}: {layout.world_size} x {escape(mem.device)}; "
        f"dp_replicate {deg['dp_replicate']} x dp_shard {deg['dp_shard']} x tp {deg['tp']}; "
        f"plugins {escape(plugins)}; micro-batch {c.training.local_batch_size} x "
        f"{c.training.seq_len} tokens; ac {mem.ac}",
        highlight=False,
    )
    table = Table(title="memory per device", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("term")
    table.add_column("at the peak", justify="right")
    table.add_column("what")
    what = {
        "parameters": f"float32, split {mem.shards} way(s)",
        "gradients": f"float32 (all of them: {_gib(mem.grads)})",
        "optimizer state": f"{c.optimizer.name}, float32",
        "activations": "kept for backward, one micro-batch",
        "logits/loss": "float32 softmax and its gradients",
        "comm buffers": "weights in flight (FSDP, autocast)",
        "temporaries": "recomputation, gradient temporaries",
        "buffers": "the rotary table",
    }
    for term, value in mem.terms().items():
        table.add_row(term, _gib(value), what[term])
    table.add_row("[bold]peak[/]", f"[bold]{_gib(mem.peak)}[/]", f"at the {mem.peak_phase}")
    if mem.device_memory:
        table.add_row("device memory", _gib(mem.device_memory), escape(mem.device))
        margin = mem.margin or 0
        style = "green" if margin >= 0 else "red"
        verdict = "fits" if margin >= 0 else "DOES NOT FIT"
        table.add_row(
            "margin",
            f"[{style}]{_gib(margin)}[/]",
            f"[{style}]{verdict}[/] ({100 * mem.peak / mem.device_memory:.0f}% of the device)",
        )
    console.print(table)
    s = speed
    sp = Table(title="speed, time, cost", box=box.SIMPLE_HEAD, title_justify="left")
    sp.add_column("figure")
    sp.add_column("value", justify="right")
    sp.add_column("how")
    sp.add_row(
        "FLOPs per token", f"{s.flops_per_token / 1e9:,.2f} G", "6 N + 12 L D S (the MFU metric's)"
    )
    if s.tokens_per_second_per_device is not None:
        sp.add_row("MFU", f"{100 * (s.mfu or 0):.1f}%", f"calibrated: row '{s.row}' (docs/plan.md)")
        sp.add_row("peak", f"{s.peak_tflops:,.0f} TFLOP/s", escape(s.peak_source))
        sp.add_row("tokens/s per device", f"{s.tokens_per_second_per_device:,.0f}", "")
        sp.add_row(
            "tokens/s, all devices", f"{s.tokens_per_second or 0:,.0f}", f"{s.devices} devices"
        )
    sp.add_row("tokens", _count(s.tokens), f"{s.steps:,} steps x {s.tokens_per_step:,}")
    sp.add_row("time", _duration(s.seconds), "")
    if s.gpu_hours is not None:
        sp.add_row("device-hours", f"{s.gpu_hours:,.0f}", f"{s.devices} devices")
        sp.add_row("instance-hours", f"{s.instance_hours:,.1f}", f"{s.nodes} node(s)")
    if s.cost is not None:
        how = f"{s.instance_hours:,.1f} instance-hours x {s.price_per_hour:,.2f}/h (given)"
        if s.spot_discount:
            how += f" less {100 * s.spot_discount:.0f}% spot"
        sp.add_row("cost", f"{s.cost:,.0f}", how)
    else:
        sp.add_row("cost", "?", "titan has no price table: give --price-per-hour")
    console.print(sp)
    for note in [*mem.notes, *s.notes]:
        console.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    if plan["refusal"]:
        console.print(f"[red]titan run would refuse this job:[/] {escape(plan['refusal'])}")
    elif mem.fits is False:
        console.print(
            f"[red]the peak does not fit:[/] {_gib(mem.peak)} per device at the {mem.peak_phase}, "
            f"{_gib(mem.device_memory)} available"
        )


@hookimpl
def titan_add_commands(app: Any) -> None:
    import typer

    @app.command(
        "plan",
        context_settings=_EXTRA,
        options_metavar="[CONFIG.toml] [OPTIONS] [--section.key=value ...]",
    )
    def plan(
        ctx: typer.Context,
        plugins: Annotated[
            str, typer.Option("--plugins", "-p", help="Plugins, as for titan run.")
        ] = "",
        backend: Annotated[
            str,
            typer.Option("--backend", "-b", help="Where it would run: local, slurm, sagemaker."),
        ] = "local",
        nproc: Annotated[
            int | None, typer.Option("--nproc", help="Processes per machine.", min=1)
        ] = None,
        nnodes: Annotated[int | None, typer.Option("--nnodes", help="Machines.", min=1)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
        tokens: Annotated[
            str,
            typer.Option("--tokens", help="Plan the time for this many tokens (1T, 500B, 20M)."),
        ] = "",
        price_per_hour: Annotated[
            float | None,
            typer.Option("--price-per-hour", help="Price of one instance (node) per hour.", min=0),
        ] = None,
        spot_discount: Annotated[
            float | None,
            typer.Option("--spot-discount", help="Spot discount as a fraction (0.7 = 70% off)."),
        ] = None,
    ) -> None:
        """Memory per device, speed, time and cost of a job, as `titan run` would launch it.

        Takes the arguments of `titan run`; launches nothing, calls no cluster or cloud.
        Exit code 1 when the peak does not fit the device.
        """
        from rich.console import Console

        from titan.core.cli_common import split_args
        from titan.core.errors import ConfigError
        from titan.core.speed_plan import parse_tokens

        for arg in ctx.args:
            name = arg.split("=", 1)[0]
            if name.startswith("-") and "." not in name:
                raise ConfigError(
                    f"titan plan: no such option '{name}'; see 'titan plan --help' (config "
                    "overrides look like --section.key=value)"
                )
        config_path, overrides = split_args(ctx.args)
        overrides += [("launch.nproc_per_node", str(nproc))] if nproc else []
        overrides += [("launch.nnodes", str(nnodes))] if nnodes else []
        names = [p.strip() for p in plugins.split(",") if p.strip()]
        result = make_plan(
            config_path,
            names,
            overrides,
            backend,
            parse_tokens(tokens) if tokens else None,
            price_per_hour,
            spot_discount,
        )
        if as_json:
            typer.echo(json.dumps(plan_json(result), indent=1))
        else:
            print_plan(result, Console(soft_wrap=True))
        if result["refusal"] or result["memory"].fits is False:
            raise typer.Exit(1)
