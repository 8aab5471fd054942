"""Inside the SageMaker container: train on every rank, publish checkpoints per host, export.

The SDK's ``sm_train.sh`` starts the ``Torchrun`` driver, which starts
torchrun, which starts ``titan_sagemaker_entry.py`` (written by titan into the
code channel) on every rank; it calls :func:`main` with the config beside it.
That config already names the SageMaker layout (see
:mod:`titan.backends.sagemaker.bundle`): the data channel, ``/opt/ml/checkpoints``
(checkpointing always on, so a restarted spot job resumes by itself: SageMaker
restores the folder from S3 before the restart), ``/opt/ml/output/tensorboard``.

Two things differ from a cluster with a shared file system, and the
``sagemaker`` plugin's training hooks (active only in the container) handle them:

* every host has its own ``/opt/ml/checkpoints``; each rank writes its shards
  there and SageMaker merges all hosts' folders in the checkpoint S3 prefix.
  titan's checkpointer renames ``step-N.tmp`` to ``step-N`` on rank 0's disk
  only, so the first rank of every other host publishes its own part the same
  way once the save is complete (:func:`publish_host_checkpoint`, from
  ``titan_checkpoint_saved``);
* for the same reason no single host holds a whole checkpoint, so the final
  model is gathered from the live, sharded model at the end of training and
  written by global rank 0 to ``/opt/ml/model`` as a Hugging Face Llama folder
  (``config.json`` + safetensors), which SageMaker uploads as ``model.tar.gz``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from titan.backends.sagemaker.bundle import SM_MODEL

CONTAINER_ENV = "TITAN_SAGEMAKER_CONTAINER"


def in_container() -> bool:
    return os.environ.get(CONTAINER_ENV) == "1"


def main(config_path: Path) -> int:
    from titan.core.train import main as train_main

    os.environ[CONTAINER_ENV] = "1"
    return train_main([str(config_path)])


def publish_host_checkpoint(trainer: Any, final: Path) -> None:
    """On a host other than rank 0's, rename this host's finished ``step-N.tmp`` to ``step-N``.

    Called on every rank through ``titan_checkpoint_saved`` once checkpoint
    ``final`` is complete (all ranks passed the checkpointer's last agreement,
    so this host's shards are written, and rank 0 published its own folder).
    Each host's ``/opt/ml/checkpoints`` is its own disk, which SageMaker copies
    to S3: without the rename the other hosts would upload a half-named
    checkpoint. With a shared folder rank 0 already renamed it: nothing to do.
    """
    if int(os.environ.get("LOCAL_RANK", "0")) != 0 or trainer.parallel.is_main:
        return
    tmp = final.with_name(final.name + ".tmp")
    if tmp.is_dir() and not final.exists():
        tmp.rename(final)


def export_final_model(trainer: Any, model_dir: Path | None = None) -> Path | None:
    """Gather the full model (collective: every rank calls this) and write it as HF on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from titan.models.convert import torch_dtype
    from titan.models.llama import hf_files
    from titan.models.llama.hf_config import hf_config_from_args
    from titan.models.llama.hf_weights import titan_to_hf

    state = get_model_state_dict(
        trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not trainer.parallel.is_main:
        return None
    c = trainer.config
    dtype = torch_dtype(c.sagemaker.model_dtype)
    state = {k: (v.to(dtype) if dtype is not None else v) for k, v in state.items()}
    hf_state = titan_to_hf(state, trainer.model_args)
    dtype_name = str(next(iter(hf_state.values())).dtype).removeprefix("torch.")
    model_dir = model_dir or Path(os.environ.get("SM_MODEL_DIR", SM_MODEL))
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".titan-model-") as tmp:
        out = Path(tmp) / "hf"
        hf_files.write_checkpoint(
            out, hf_config_from_args(trainer.model_args, c.model.name, dtype_name), hf_state
        )
        for f in out.iterdir():
            target = model_dir / f.name
            if target.exists():
                target.unlink()
            shutil.move(str(f), target)
    print(
        f"final model (step {trainer.step}) written to {model_dir} as Hugging Face safetensors",
        flush=True,
    )
    return model_dir
