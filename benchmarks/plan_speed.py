"""``titan plan``'s speed model out of sample: predicted vs published tokens/s per GPU.

    uv run python benchmarks/plan_speed.py

The MFU per plugin set is calibrated on one published source
(:data:`titan.core.speed_plan.CALIBRATION`: torchtitan's Llama 3.1 8B table on
8 x H100). This script plans the seed article's job with titan's own
``plan_speed`` (Llama 3 8B, seq 8192, local batch 1, selective per-op
activation checkpointing as torchtitan's llama3_8b.toml, on SageMaker 4 x
ml.p5.48xlarge = 32 H100s, the layout from titan's SageMaker backend) and
prints, for each of its four rows, the prediction, the published figure and
the error. No torch, no network, no AWS call.
"""

from __future__ import annotations

import tempfile

SEED_SOURCE = (
    "AWS ML blog, 'Efficient Pre-training of Llama 3-like model architectures using "
    "torchtitan on Amazon SageMaker' (4 x ml.p5.48xlarge)"
)
SEED: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("baseline", ("ac",), 6475),
    ("compile", ("ac", "compile"), 7166),
    ("+fp8", ("ac", "compile", "fp8"), 8624),
    ("+fp8-ag", ("ac", "compile", "fp8", "fp8-ag"), 8950),
)
ROLE = "arn:aws:iam::123456789012:role/R"


def predict(plugins: tuple[str, ...], instances: int = 4) -> object:
    from titan.core.launch import prepare_job
    from titan.core.speed_plan import plan_speed

    with tempfile.TemporaryDirectory() as dump:
        overrides = [
            ("model.flavor", "8B"),
            ("training.seq_len", "8192"),
            ("training.local_batch_size", "1"),
            ("ac.mode", "selective"),
            ("ac.selective_ac_option", "op"),
            ("job.dump_folder", dump),
            ("sagemaker.role", ROLE),
            ("sagemaker.region", "us-east-1"),
            ("sagemaker.instance_type", "ml.p5.48xlarge"),
            ("sagemaker.instance_count", str(instances)),
        ]
        if "fp8" in plugins:
            overrides.append(("fp8.recipe_name", "tensorwise"))
        job = prepare_job(None, list(plugins), overrides, validate=False)
        backend = job.backends.get("sagemaker")
        layout = job.backends.layout(backend, job, offline=True)
        return plan_speed(job, layout)


def main() -> None:
    from titan.core.speed_plan import CALIBRATION, CALIBRATION_SOURCE, calibrated_mfu

    print(f"calibration: {CALIBRATION_SOURCE}")
    mfu = calibrated_mfu()
    for row in CALIBRATION:
        peak = "float8" if row.float8 else "bf16"
        print(
            f"  {row.plugins:<12} {row.tokens_per_second:>7,.0f} tok/s/GPU -> MFU "
            f"{100 * mfu[row.plugins]:.1f}% ({peak} peak)"
        )
    print(f"\nout of sample: {SEED_SOURCE}")
    print(f"{'plugins':<10} {'predicted':>10} {'published':>10} {'error':>7}  calibration row")
    worst = 0.0
    for name, plugins, published in SEED:
        plan = predict(plugins)
        tps = plan.tokens_per_second_per_device
        error = 100 * (tps - published) / published
        worst = max(worst, abs(error))
        print(f"{name:<10} {tps:>10,.0f} {published:>10,.0f} {error:>+6.1f}%  {plan.row}")
    print(f"largest error {worst:.1f}% (goal: within 15%)")


if __name__ == "__main__":
    main()
