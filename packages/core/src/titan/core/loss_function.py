"""The loss titan computes from logits and labels, and the one place plugins wrap it.

Tensor parallel's loss parallel (a replicated DTensor loss made local again) and
``torch.compile`` of the loss each wrap the plain cross-entropy. They do it from their
build hooks (``titan_apply_tensor_parallel``, ``titan_apply_compile``), which receive this
object as ``loss``: the wrappers then nest in the build's fixed order (TP inside compile)
whatever order the plugins were listed or registered in, with no tryfirst/trylast and no
plugin replacing a trainer attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the tokens, in float32 (``logits`` ``[batch, seq, vocab]``)."""
    import torch

    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


class LossFunction:
    """``loss(logits, labels)``: the cross-entropy, as wrapped by the build hooks so far."""

    def __init__(self, fn: LossFn = cross_entropy) -> None:
        self.fn = fn
        self.without_logits: str | None = None  # the plugin whose loss never makes logits

    def wrap(self, wrapper: Callable[[LossFn], LossFn], without_logits: str | None = None) -> None:
        """Replace the function by ``wrapper(function)``: later phases wrap earlier ones.

        A plugin whose loss computes the output projection itself (the model then
        returns its final hidden states, not logits) passes its name as
        ``without_logits``: hooks that read logits cannot be combined with it.
        """
        self.fn = wrapper(self.fn)
        self.without_logits = without_logits or self.without_logits

    def refuse_logit_readers(self, hooks: Any) -> None:
        """One line naming both sides if the model makes no logits but a plugin reads them."""
        if self.without_logits is None:
            return
        from titan.core.errors import PluginError

        readers = sorted(
            {
                impl.plugin_name
                for name in ("titan_loss", "titan_loss_terms")
                for impl in getattr(hooks, name).get_hookimpls()
            }
        )
        if readers:
            raise PluginError(
                f"plugin '{self.without_logits}' computes the loss without making the logits, "
                f"but {', '.join(repr(r) for r in readers)} read(s) them in titan_loss or "
                "titan_loss_terms; remove one of them from the plugins"
            )

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, labels)
