"""Secrets planted in the environment appear in no file a run writes, nor in its output."""

from __future__ import annotations

import subprocess

from exact_runs import titan_cmd, titan_env

SECRETS = {
    "HF_TOKEN": "hf_PLANTEDsecretVALUE0001",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDSECRET0002",
    "AWS_SECRET_ACCESS_KEY": "planted/aws/secret/key/0003",
    "WANDB_API_KEY": "plantedwandbkey00000000004",
}


def test_planted_secrets_are_written_nowhere(tmp_path):
    dump = tmp_path / "run"
    proc = subprocess.run(
        titan_cmd(
            f"--job.dump_folder={dump}",
            "--training.steps=2",
            "--training.seq_len=32",
            "--training.local_batch_size=2",
            "--metrics.log_freq=1",
            "--metrics.enable_tensorboard=true",
            "--checkpoint.enable_checkpoint=true",
            "--checkpoint.interval=1",
            # A token pasted into the config by mistake: redacted when the config is written.
            f"--job.description=run with {SECRETS['HF_TOKEN']}",
        ),
        env=titan_env(**SECRETS),
        capture_output=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    files = [p for p in dump.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"job_config.toml", "metrics.jsonl", ".metadata"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    for name, value in SECRETS.items():
        needle = value.encode()
        assert needle not in proc.stdout and needle not in proc.stderr, name
        for path in files:
            assert needle not in path.read_bytes(), (name, path)
    assert "<redacted:HF_TOKEN>" in (dump / "job_config.toml").read_text()
