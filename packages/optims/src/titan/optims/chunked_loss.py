"""chunked-loss: the output projection and the cross-entropy, chunk by chunk.

For Llama 3 the output projection over a 128,256-token vocabulary makes the
largest activation of a step: the logits of one 8K-token sequence are 4.2 GB
in float32, and the plain loss keeps them, their softmax and their gradient
alive at once. This plugin makes the model's ``output`` layer pass the final
norm's output through unchanged and computes ``hidden @ output.weight.T`` and
the cross-entropy together, a few hundred tokens at a time, so that only one
chunk's logits ever exist.

The gradients are computed in the same pass, chunk by chunk (as Liger's fused
linear cross-entropy does): once a chunk's softmax is known, its gradient
``softmax - onehot`` is multiplied straight into the hidden states' and the
weight's gradients and dropped. A backward that recomputed each chunk instead
would run the output projection a third time, which on an 8B model cut to a
few layers is a fifth more work; this way the step does exactly the plain
computation's matrix products. Backward then only scales the stored
gradients by the incoming one (1 / micro-batches under accumulation).

Composes with the other plugins from outside the model:

* FSDP2: the ``output`` layer is still the module FSDP groups with the final
  norm, so its weight is all-gathered and its gradient reduce-scattered as
  before. The loss reads the gathered weight after the forward; if the head
  was resharded after forward (``fsdp_reshard_after_forward = "always"``) it
  is gathered again with ``unshard()``.
* TP: ``tp`` shards the weight over the vocabulary (it sees
  ``returns_hidden_states`` and keeps the hidden states replicated instead of
  producing sharded logits); each rank computes its vocabulary slice of every
  chunk and three small all-reduces per chunk (max, sum of exponentials,
  target logit) make the loss exact. The hidden states' gradient leaves as a
  partial sum, reduce-scattered by DTensor back to the sequence shards.
* compile with ``compile.loss``: the chunk loop is traced into one graph (the
  loop is unrolled; no graph break per chunk).
* float8: ``fp8`` never converts the output layer; it stays in high precision.

The logits are never materialised, so ``titan_loss`` and ``titan_loss_terms``
receive the final hidden states in their ``logits`` argument while this
plugin is active: a z-loss or other logit-based term cannot be combined
with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from titan.core import hookimpl
from titan.optims._common import say_once


@dataclass
class ChunkedLossConfig:
    chunk_tokens: int = 0
    """Tokens per chunk; 0: about vocab/dim chunks (logits the size of the hidden states), >= 256 tokens."""


@hookimpl
def titan_config_sections() -> dict[str, type]:
    return {"chunked_loss": ChunkedLossConfig}


@hookimpl
def titan_validate_config(config: Any) -> None:
    from titan.core.errors import ConfigError

    if config.chunked_loss.chunk_tokens < 0:
        raise ConfigError(
            f"chunked_loss.chunk_tokens is {config.chunked_loss.chunk_tokens}; "
            "set a positive number of tokens per chunk, or 0 to pick one from the model's shape"
        )


@hookimpl
def titan_convert_model(model: Any, config: Any, loss: Any) -> None:
    """Make ``model.output`` return its input and replace the loss by the chunked one."""
    from torch import nn

    from titan.core.errors import PluginError
    from titan.core.loss_function import cross_entropy

    head = getattr(model, "output", None)
    if type(head) is not nn.Linear or head.bias is not None:
        raise PluginError(
            f"plugin 'chunked-loss' needs the model's output layer to be a bias-free "
            f"nn.Linear (as titan's Llama has); this model's is {type(head).__name__}; "
            "remove chunked-loss from the plugins"
        )
    if loss.fn is not cross_entropy:
        raise PluginError(
            "plugin 'chunked-loss' replaces the plain cross-entropy, but another plugin "
            "changed the loss before it; remove one of them from the plugins"
        )
    from titan.optims.chunked_cross_entropy import ChunkedCrossEntropy, HiddenStatesHead

    head.__class__ = HiddenStatesHead  # the same module and weight, now passing its input on
    chunk = config.chunked_loss.chunk_tokens
    loss.wrap(lambda _plain: ChunkedCrossEntropy(head, chunk), without_logits="chunked-loss")


@hookimpl
def titan_train_start(trainer: Any) -> None:
    """Say so once the build succeeded (a refused combination prints only its one line)."""
    chunk = trainer.config.chunked_loss.chunk_tokens
    say_once(
        "chunked-loss: the output projection and cross-entropy run "
        f"{f'{chunk} tokens' if chunk else 'a chunk'} at a time; the full logits are never kept"
    )
